"""Load a run config: YAML -> dict -> `--set a.b=c` overrides -> strict dataclasses (dacite).

Every unknown key and every value of the wrong type is an error naming its dotted path."""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from pathlib import Path
from typing import Any

import dacite
import yaml

from pipeline.errors import ConfigError
from schemas.config import PipelineConfig


def _unknown_keys(cls: type, data: Any, path: str) -> list[str]:
    """Dotted paths of keys in `data` that `cls` (a dataclass) does not have, recursively."""
    if not dataclasses.is_dataclass(cls) or not isinstance(data, dict):
        return []
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    found = []
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in names:
            found.append(where + _did_you_mean(str(key), names, f"{path}." if path else ""))
            continue
        found += _check_nested(hints[key], value, where)
    return found


def _did_you_mean(key: str, known, prefix: str = "") -> str:
    """" (did you mean <prefix><closest known key>?)", or "" when nothing is close."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def _check_nested(tp: Any, value: Any, where: str) -> list[str]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _unknown_keys(tp, value, where)
    if origin is typing.Union:
        return [k for a in args if a is not type(None) for k in _check_nested(a, value, where)]
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return [k for sub_key, sub in value.items()
                for k in _check_nested(args[1], sub, f"{where}.{sub_key}")]
    return []


def _apply_override(data: dict, assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set expects key.path=value, got {assignment!r}")
    dotted, raw = assignment.split("=", 1)
    keys = [k for k in dotted.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"--set has an empty key: {assignment!r}")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {dotted}: value {raw!r} is not valid YAML: {exc}") from exc
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{key}' is a value, not a section")
        node = child
    node[keys[-1]] = value


def _to_float(value: Any) -> Any:
    # YAML reads `5` as int; accept it where a float is declared (bools stay wrong).
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    for assignment in overrides or []:
        _apply_override(data, assignment)
    return parse_config(data, source=str(path))


def parse_config(data: dict, source: str = "config") -> PipelineConfig:
    unknown = _unknown_keys(PipelineConfig, data, "")
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)} (check the spelling; "
                          f"see configs/local.yaml for every key)")
    try:
        cfg = dacite.from_dict(PipelineConfig, data, config=dacite.Config(
            strict=True, type_hooks={float: _to_float}))
    except dacite.MissingValueError as exc:
        raise ConfigError(f"{source}: missing required key '{exc.field_path}'") from exc
    except dacite.WrongTypeError as exc:
        raise ConfigError(
            f"{source}: key '{exc.field_path}' has value {exc.value!r}, which is not "
            f"{getattr(exc.field_type, '__name__', exc.field_type)}") from exc
    except dacite.DaciteError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    problem = check_values(cfg)
    if problem:
        raise ConfigError(f"{source}: {problem}")
    _validate(cfg, source)
    return cfg


def _rule_text(rule: dict) -> str:
    if "one_of" in rule:
        return "one of " + ", ".join(map(str, rule["one_of"]))
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return " and ".join(f"{words[k]} {v:g}" for k, v in rule.items())


def _breaks(value: Any, rule: dict) -> bool:
    if "one_of" in rule:
        return value not in rule["one_of"]
    return (("ge" in rule and not value >= rule["ge"])
            or ("gt" in rule and not value > rule["gt"])
            or ("le" in rule and not value <= rule["le"])
            or ("lt" in rule and not value < rule["lt"]))


def _declares(tp: Any, kind: type) -> bool:
    """Whether the declared type `tp` is `kind` or Optional[kind]."""
    return tp is kind or (typing.get_origin(tp) is typing.Union and kind in typing.get_args(tp))


def check_values(obj: Any, path: str = "") -> str | None:
    """The first value of a parsed config that is out of its declared range (schemas/config.py
    `bounded`), a float that is not finite (NaN, inf), or a bool where a number is declared, as
    a message naming its dotted key; None when every value is fine. Walks nested sections, the
    values of dict sections (ray.resources.*, models.*) and the items of list sections
    (asr.systems[i])."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, where = getattr(obj, f.name), f"{path}{f.name}"
        if dataclasses.is_dataclass(value):
            problem = check_values(value, where + ".")
        elif isinstance(value, (dict, list)):
            items = value.items() if isinstance(value, dict) else enumerate(value)
            problem = next((p for k, v in items for p in [_check_item(v, where, k)] if p), None)
        else:
            problem = _check_scalar(value, hints[f.name], f.metadata.get("rule"), where)
        if problem:
            return problem
    return None


def _check_item(value: Any, where: str, key: Any) -> str | None:
    """An item of a dict or list section: a section of its own, a number, or a container."""
    where = f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}"
    if dataclasses.is_dataclass(value):
        return check_values(value, where + ".")
    if isinstance(value, (dict, list)):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        return next((p for k, v in items for p in [_check_item(v, where, k)] if p), None)
    if isinstance(value, float) and not math.isfinite(value):
        return f"key '{where}' must be a finite number, got {value!r}"
    return None


def _check_scalar(value: Any, declared: Any, rule: dict | None, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) and (_declares(declared, int) or _declares(declared, float)):
        return f"key '{where}' must be a number, got {value!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"key '{where}' must be a finite number, got {value!r}"
    if rule and _breaks(value, rule):
        return f"key '{where}' must be {_rule_text(rule)}, got {value!r}"
    return None


def model_roles(cfg: PipelineConfig) -> dict[str, str]:
    """Every registry entry the run uses, by the role it plays."""
    roles = {"vad": cfg.segment.vad_model, "events": cfg.events.model,
             "speakers": cfg.speakers.model}
    roles.update({f"asr:{s.name}": s.model for s in cfg.asr.systems})
    if cfg.caption.enabled and not cfg.caption.endpoint.url:
        roles["caption"] = cfg.caption.local_server.model  # the embedded server's GGUF
    return roles


def _validate(cfg: PipelineConfig, source: str) -> None:
    """Rules across keys, and on list items, that a single field's range cannot say."""
    for key in ("extensions", "skip_extensions"):
        for ext in getattr(cfg.input, key):
            if not (ext.startswith(".") and len(ext) > 1 and "/" not in ext):
                raise ConfigError(f"{source}: input.{key}: {ext!r} is not a file extension; "
                                  f"write it with its dot, e.g. '.{ext.lstrip('.')}'")
    both = sorted({e.lower() for e in cfg.input.extensions}
                  & {e.lower() for e in cfg.input.skip_extensions})
    if both:
        raise ConfigError(f"{source}: {', '.join(both)} is in both input.extensions and "
                          f"input.skip_extensions; keep it in one")
    for key, uri in (("input.uri", cfg.input.uri), ("output.uri", cfg.output.uri)):
        if not uri.startswith("s3://") or len(uri) <= len("s3://"):
            raise ConfigError(f"{source}: {key} must be an s3://bucket/prefix URI, got {uri!r}")
    if cfg.segment.min_speech_s >= cfg.segment.max_speech_s:
        raise ConfigError(f"{source}: segment.min_speech_s must be below segment.max_speech_s")
    for name in model_roles(cfg).values():
        if name not in cfg.models:
            raise ConfigError(f"{source}: model '{name}' is used but not declared under models:")
    names = [s.name for s in cfg.asr.systems]
    if not names:
        raise ConfigError(f"{source}: asr.systems is empty; configure at least one system")
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: asr.systems has duplicate names: {names}")
    m = cfg.measures
    if not m.pitch_fmin_hz < m.pitch_fmax_hz:
        raise ConfigError(f"{source}: need measures.pitch_fmin_hz < measures.pitch_fmax_hz")
    if cfg.segment.target_s < cfg.segment.min_speech_s:
        raise ConfigError(f"{source}: segment.target_s must be at least segment.min_speech_s")
    c = cfg.caption
    if c.endpoint.url is not None and not c.endpoint.url.startswith(("http://", "https://")):
        raise ConfigError(f"{source}: caption.endpoint.url must be an http(s):// URL ending in "
                          f"/v1, got {c.endpoint.url!r}")
    if c.endpoint.hears_audio and c.endpoint.url is None:
        raise ConfigError(f"{source}: caption.endpoint.hears_audio needs caption.endpoint.url "
                          f"(the embedded server runs a text model, which cannot hear)")
    if c.backoff_max_s < c.backoff_base_s:
        raise ConfigError(f"{source}: need caption.backoff_base_s <= caption.backoff_max_s")
    _validate_release(cfg, source)
    from pipeline.dag import STAGES

    # load / write: the night's first and last stage; tokenize: the release's GPU stage.
    names = ["load", *(s.name for s in STAGES), "write", "tokenize"]
    for k in cfg.ray.resources:
        if k not in names:
            raise ConfigError(f"{source}: unknown key 'ray.resources.{k}'"
                              f"{_did_you_mean(k, names, 'ray.resources.')} (stages: "
                              f"{', '.join(names)})")
    if cfg.ray.address is None and cfg.ray.num_cpus is not None:
        from pipeline.dag import cpu_claims

        actors, task = cpu_claims(cfg)
        if actors + task > cfg.ray.num_cpus:
            raise ConfigError(
                f"{source}: the model stages' actors claim {actors:g} of ray.num_cpus="
                f"{cfg.ray.num_cpus} logical CPUs, leaving less than the {task:g} a decode task "
                f"needs: the run would hang. Raise ray.num_cpus (logical CPUs may exceed the "
                f"physical ones) or lower ray.resources.<stage>.num_cpus")


def _validate_release(cfg: PipelineConfig, source: str) -> None:
    r = cfg.release
    allowed = ("language", "caption_source", "caption_scene", "transcript_system")
    bad = [k for k in r.stratify_by if k not in allowed]
    if bad:
        raise ConfigError(f"{source}: release.stratify_by {bad} not supported (use any of "
                          f"{', '.join(allowed)}; content type is always a stratum)")
    if r.splits.validation < 0 or r.splits.test < 0 or r.splits.validation + r.splits.test >= 1:
        raise ConfigError(f"{source}: release.splits.validation and .test must be >= 0 and "
                          f"leave some share for train")
    if r.tokenizer.model not in cfg.models:
        raise ConfigError(f"{source}: model '{r.tokenizer.model}' (release.tokenizer.model) is "
                          f"not declared under models:")
    q = r.quality
    if not q.snr_floor_db < q.snr_good_db:
        raise ConfigError(f"{source}: need release.quality.snr_floor_db < snr_good_db")
    for ctype, weights in q.weights.items():
        unknown = set(weights) - {"agreement", "confidence", "snr", "content", "clipping",
                                  "duration", "caption"}
        if unknown or any(w < 0 for w in weights.values()):
            raise ConfigError(f"{source}: release.quality.weights.{ctype}: unknown components "
                              f"{sorted(unknown)} or a negative weight")
    for ctype, limits in q.durations.items():
        if len(limits) != 4 or sorted(limits) != list(limits):
            raise ConfigError(f"{source}: release.quality.durations.{ctype} must be 4 increasing "
                              f"seconds [hard min, ideal from, ideal to, hard max]")
