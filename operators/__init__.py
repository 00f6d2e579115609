"""One module per stage. Each stage is a small callable class mapping an Arrow batch to an Arrow
batch; it is testable without Ray (call it on a small table)."""
