"""The data model: Arrow schemas of every table, config dataclasses. Imports nothing of ours."""
