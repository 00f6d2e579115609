"""Load a run config: YAML -> dict -> `--set a.b=c` overrides -> strict dataclasses (dacite).

Every unknown key and every value of the wrong type is an error naming its dotted path."""
from __future__ import annotations

import dataclasses
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
            found.append(where)
            continue
        found += _check_nested(hints[key], value, where)
    return found


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
    _validate(cfg, source)
    return cfg


def model_roles(cfg: PipelineConfig) -> dict[str, str]:
    """Every registry entry the run uses, by the role it plays."""
    roles = {"vad": cfg.segment.vad_model, "events": cfg.events.model,
             "speakers": cfg.speakers.model}
    roles.update({f"asr:{s.name}": s.model for s in cfg.asr.systems})
    if cfg.caption.enabled and not cfg.caption.endpoint.url:
        roles["caption"] = cfg.caption.local_server.model  # the embedded server's GGUF
    return roles


def _validate(cfg: PipelineConfig, source: str) -> None:
    for key, uri in (("input.uri", cfg.input.uri), ("output.uri", cfg.output.uri)):
        if not uri.startswith("s3://") or len(uri) <= len("s3://"):
            raise ConfigError(f"{source}: {key} must be an s3://bucket/prefix URI, got {uri!r}")
    if not 0.0 <= cfg.run.max_failed_fraction <= 1.0:
        raise ConfigError(f"{source}: run.max_failed_fraction must be within [0, 1]")
    if cfg.segment.max_speech_s > 30.0:
        raise ConfigError(f"{source}: segment.max_speech_s must be at most 30 (Whisper's window)")
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
    if cfg.agreement.unverified_policy not in ("drop", "penalize"):
        raise ConfigError(f"{source}: agreement.unverified_policy must be drop or penalize, "
                          f"got {cfg.agreement.unverified_policy!r}")
    if not 0.0 <= cfg.agreement.threshold <= 1.0 or cfg.agreement.min_voters < 1:
        raise ConfigError(f"{source}: agreement.threshold must be within [0, 1] and "
                          f"agreement.min_voters at least 1")
    m, e, sp = cfg.measures, cfg.events, cfg.speakers
    if not 0.0 < m.clip_level <= 1.0 or not 0.0 <= m.max_clipped_ratio <= 1.0:
        raise ConfigError(f"{source}: measures.clip_level must be within (0, 1] and "
                          f"measures.max_clipped_ratio within [0, 1]")
    if not 0.0 < m.pitch_fmin_hz < m.pitch_fmax_hz <= 2000.0:
        raise ConfigError(f"{source}: need 0 < measures.pitch_fmin_hz < measures.pitch_fmax_hz "
                          f"<= 2000")
    if e.top_k < 1 or not 0.0 < e.frame_threshold < 1.0 or not 0.0 < e.music_share <= 1.0:
        raise ConfigError(f"{source}: events.top_k must be at least 1, events.frame_threshold "
                          f"within (0, 1), events.music_share within (0, 1]")
    if not 0.1 <= sp.hop_s <= 1.6 or not 0.0 < sp.distance_threshold < 2.0:
        raise ConfigError(f"{source}: need 0.1 <= speakers.hop_s <= 1.6 (the window) and "
                          f"speakers.distance_threshold within (0, 2) (cosine distance)")
    c = cfg.caption
    if c.endpoint.url is not None and not c.endpoint.url.startswith(("http://", "https://")):
        raise ConfigError(f"{source}: caption.endpoint.url must be an http(s):// URL ending in "
                          f"/v1, got {c.endpoint.url!r}")
    if c.endpoint.hears_audio and c.endpoint.url is None:
        raise ConfigError(f"{source}: caption.endpoint.hears_audio needs caption.endpoint.url "
                          f"(the embedded server runs a text model, which cannot hear)")
    if c.concurrency < 1 or c.max_attempts < 1 or c.breaker_failures < 1 or c.max_tokens < 16:
        raise ConfigError(f"{source}: caption.concurrency, caption.max_attempts and "
                          f"caption.breaker_failures must be at least 1, caption.max_tokens at "
                          f"least 16")
    if c.timeout_s <= 0 or c.backoff_base_s < 0 or c.backoff_max_s < c.backoff_base_s:
        raise ConfigError(f"{source}: need caption.timeout_s > 0 and 0 <= "
                          f"caption.backoff_base_s <= caption.backoff_max_s")
    _validate_release(cfg, source)
    from pipeline.dag import STAGES

    names = [s.name for s in STAGES] + ["tokenize"]  # tokenize: the release's GPU stage
    for k in cfg.ray.resources:
        if k not in names:
            raise ConfigError(f"{source}: unknown key 'ray.resources.{k}' (stages: "
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
    if not 0.0 < r.fraction <= 1.0:
        raise ConfigError(f"{source}: release.fraction must be within (0, 1], got {r.fraction}")
    if r.unit not in ("segments", "hours"):
        raise ConfigError(f"{source}: release.unit must be segments or hours, got {r.unit!r}")
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
    if r.tokenizer.batch_seconds <= 0 or r.tokenizer.max_batch_segments < 1:
        raise ConfigError(f"{source}: release.tokenizer.batch_seconds must be > 0 and "
                          f"max_batch_segments at least 1")
    if r.shards.target_mb <= 0 or r.shards.row_group_rows < 1:
        raise ConfigError(f"{source}: release.shards.target_mb must be > 0 and "
                          f"row_group_rows at least 1")
    q = r.quality
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
