"""Collect real malformed replies from the embedded caption model, for tests/data/caption_replies/.

The model runs WITHOUT constrained decoding, under prompts that invite the classic failures
(looping prose, markdown fences, Python-dict quotes, comments, trailing commas, truncation by
max_tokens), and once WITH it but cut short by max_tokens (a truncated, otherwise valid reply). Each reply is stored verbatim with how it was obtained; the expected verdict of each
(repaired into a valid caption, or dropped) is judged by a person and kept in `expected.json`.

    .venv/bin/python -m bench.collect_caption_replies [--out tests/data/caption_replies]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from model_serving.chat_client import ChatClient
from model_serving.llm_server import LocalLlmServer
from model_serving.registry import ModelRegistry
from operators.caption_prompt import build_messages
from pipeline.config import load_config
from schemas.captions import request_schema

ROWS = {
    "speech": {"content_type": "speech", "duration_s": 7.3, "language": "en",
               "transcript": "I am sure that Marianne will be very happy there, said Elinor.",
               "event_labels": [{"name": "Speech", "score": 0.91},
                                {"name": "Narration, monologue", "score": 0.42}],
               "speaker_count": 1, "snr_db": 24.2, "loudness_lufs": -21.3,
               "pitch_mean_hz": 118, "speaking_rate": 2.6},
    "music": {"content_type": "music", "duration_s": 4.1,
              "event_labels": [{"name": "Violin, fiddle", "score": 0.71},
                               {"name": "Music", "score": 0.65}],
              "snr_db": 31.0, "loudness_lufs": -18.0},
    "sound": {"content_type": "sound", "duration_s": 3.0,
              "event_labels": [{"name": "Vacuum cleaner", "score": 0.55},
                               {"name": "Mechanisms", "score": 0.3}],
              "snr_db": 12.5, "loudness_lufs": -24.0},
}

# name -> (extra instruction appended to the user message, max_tokens, constrained)
VARIANTS = {
    "plain": ("", 320, False),                  # our prompt, no schema: prose and loops
    "fenced": ("Answer with the JSON in a ```json code block.", 320, False),
    "python_dict": ("Write the object as a Python dict literal, with single quotes.", 320, False),
    "commented": ("Write the JSON and put a // comment after every value explaining it.", 320,
                  False),
    "trailing_commas": ("Write the JSON with a comma after every value, also the last one.",
                        320, False),
    "truncated": ("Write the JSON object now.", 40, False),
    "constrained_cut": ("", 110, True),         # schema-following, stopped mid-description
}


def collect(out: Path, config: str = "configs/local.yaml") -> None:
    cfg = load_config(config)
    registry = ModelRegistry(cfg.models, cfg.model_cache_dir)
    gguf = registry.resolve(cfg.caption.local_server.model).only_file(".gguf", "GGUF model")
    schema = request_schema(hears_audio=False)
    out.mkdir(parents=True, exist_ok=True)
    index = {}
    with LocalLlmServer(str(gguf), alias=cfg.caption.endpoint.model) as server:
        client = ChatClient(server.url, cfg.caption.endpoint.model, timeout_s=120)
        for variant, (extra, max_tokens, constrained) in VARIANTS.items():
            for kind, row in ROWS.items():
                messages = build_messages(row, schema, False, 1000)
                if extra:
                    messages[1]["content"] += "\n" + extra
                reply = client.complete(messages, max_tokens=max_tokens,
                                        json_schema=schema if constrained else None)
                name = f"{variant}-{kind}.txt"
                (out / name).write_text(reply.text)
                index[name] = {"variant": variant, "row": kind, "instruction": extra,
                               "max_tokens": max_tokens, "constrained": constrained,
                               "finish_reason": reply.finish_reason,
                               "completion_tokens": reply.completion_tokens,
                               "model": str(gguf.name)}
                print(f"{name:<28} {reply.finish_reason:<7} {reply.completion_tokens} tokens")
    (out / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="tests/data/caption_replies")
    collect(Path(parser.parse_args().out))
