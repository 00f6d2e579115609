"""Stage real recorded audio from Debian packages into S3, plus planted bad files.

Sources (installed by scripts/bootstrap.sh with apt-get; licences allow testing):
- pocketsphinx-testdata: LibriVox clips with reference transcripts, CMU "cards" recordings;
- tuxpaint-stamps-default: recorded sound effects and spoken descriptions in many languages.

    python -m infra.demo_corpus demo  --uri s3://audioverse-demo/raw/    # ~40 objects
    python -m infra.demo_corpus bench --uri s3://audioverse-bench/raw/   # >= 20 min of audio

The demo set re-encodes clips into several containers (wav, flac, mp3, ogg/opus, m4a) so every
decoder path is exercised, and plants bad objects (zero bytes, random bytes named .wav, a
truncated flac, text named .mp3, digital silence, a .txt) that must end in the rejects table.
Staging is idempotent: an object already present with the same size is not uploaded again.
"""
from __future__ import annotations

import argparse
import io
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
TUXPAINT = Path("/usr/share/tuxpaint/stamps")
LIBRIVOX = POCKETSPHINX / "librivox"
# codec2-examples: short English recordings of known male and female speakers (the codec's test
# voices; "f"/"m" in forig/morig and its 2400 bit/s pair, hts1a male, hts2a female), and radio
# recordings of male operators (vk5qi, ve9qrp).
CODEC2 = Path("/usr/share/codec2/wav")
CODEC2_VOICES = {"forig": "female", "f2400": "female", "hts2a": "female",
                 "morig": "male", "m2400": "male", "hts1a": "male", "vk5qi": "male",
                 "ve9qrp": "male"}
RATE = 16000

# Sound effects named for what they are (the events issue checks tagger labels against these).
SOUND_EFFECTS = [
    "hobbies/music/string/violin.ogg",
    "household/vacuum_cleaner.ogg",
    "hobbies/music/percussion/drumkit.ogg",
    "animals/mammals/equines/horse.ogg",
    "animals/amphibians/frog.ogg",
    "seasonal/newyears/fireworks.ogg",
]
# Spoken descriptions: English, plus other languages for language detection.
DESCRIPTIONS = [
    "animals/mammals/badger_desc.ogg",
    "animals/mammals/badger_desc_fr.ogg",
    "animals/mammals/badger_desc_es.ogg",
    "animals/mammals/badger_desc_ru.ogg",
]


@dataclass(frozen=True)
class StagedFile:
    key: str          # relative to the target prefix
    body: bytes


def require_sources() -> None:
    missing = [p for p in (LIBRIVOX, TUXPAINT) if not p.exists()]
    if missing:
        raise SystemExit(
            "error: demo audio sources are missing: " + ", ".join(map(str, missing))
            + "; install them with `apt-get install pocketsphinx-testdata tuxpaint-stamps-default`"
            " (`make install` does this)"
        )


def librivox_references() -> dict[str, str]:
    """clip stem -> reference transcript (lower case, no punctuation)."""
    refs = {}
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        m = re.match(r"<s>\s*(.*?)\s*</s>\s*\((.+)\)", line.strip())
        if m:
            refs[m.group(2)] = m.group(1)
    return refs


def cards_references() -> dict[str, str]:
    refs = {}
    for line in (POCKETSPHINX / "cards" / "cards.transcription").read_text().splitlines():
        m = re.match(r"<s>\s*(.*?)\s*</s>\s*\((.+)\)", line.strip())
        if m:
            refs[m.group(2)] = m.group(1)
    return refs


def read_audio(path: Path) -> np.ndarray:
    """Decode any source file to 16 kHz mono float32 (PyAV)."""
    from operators.decode import decode_audio_bytes

    return decode_audio_bytes(path.read_bytes(), 24 * 3600, 0.0).audio


# container name, codec, file extension
FORMATS = {
    "wav": ("wav", "pcm_s16le", ".wav"),
    "flac": ("flac", "flac", ".flac"),
    "mp3": ("mp3", "libmp3lame", ".mp3"),
    "opus": ("ogg", "libopus", ".opus"),
    "m4a": ("ipod", "aac", ".m4a"),
    "wav_float": ("wav", "pcm_f32le", ".wav"),   # can carry NaN/inf, as real float WAVs do
}


def telephone_band(audio: np.ndarray) -> np.ndarray:
    """16 kHz audio filtered to 300-3400 Hz, as a narrowband telephone line passes it."""
    from scipy.signal import butter, sosfiltfilt

    sos = butter(8, [300, 3400], btype="bandpass", fs=RATE, output="sos")
    return sosfiltfilt(sos, audio).astype(np.float32)


def encode(audio: np.ndarray, fmt: str, rate: int = RATE) -> bytes:
    """Encode mono float32 audio into one of FORMATS with PyAV."""
    import av

    container_name, codec, _ = FORMATS[fmt]
    if codec == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
        raise ValueError("opus needs a standard rate")
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container_name) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        fmt_name = {"pcm_s16le": "s16", "flac": "s16", "libmp3lame": "fltp",
                    "libopus": "flt", "aac": "fltp", "pcm_f32le": "flt"}[codec]
        pcm = np.clip(audio, -1.0, 1.0).astype(np.float32)  # NaN stays NaN
        if fmt_name == "s16":
            pcm = (pcm * 32767).astype(np.int16)
        frame_size = stream.codec_context.frame_size or 1024
        for start in range(0, pcm.size, frame_size):
            chunk = pcm[start:start + frame_size].reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=fmt_name,
                                               layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def planted_bad_files() -> list[StagedFile]:
    rng = np.random.default_rng(7)
    flac = encode(read_audio(LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0870.wav"), "flac")
    quiet = (rng.standard_normal(RATE * 3) * 10 ** (-75 / 20)).astype(np.float32)  # -75 dBFS hiss
    speech_wav = encode(read_audio(LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0870.wav"),
                        "wav")
    return [
        StagedFile("bad/empty.wav", b""),
        StagedFile("bad/random_bytes.wav", rng.bytes(48_000)),
        StagedFile("bad/truncated.flac", flac[: len(flac) // 2]),
        StagedFile("bad/not_audio.mp3", b"This is a text file, not an MP3.\n" * 200),
        StagedFile("bad/readme.txt", b"notes that were uploaded by mistake\n"),
        StagedFile("bad/digital_silence.wav", encode(np.zeros(RATE * 3, np.float32), "wav")),
        StagedFile("bad/near_silence.flac", encode(quiet, "flac")),
        # WAV headers that declare more audio than the object holds (FFmpeg would clamp them
        # and decode what is there as an ordinary, shorter recording)
        StagedFile("bad/header_claims_2gib.wav", _declare_wav_data(speech_wav, 2**31)[:1000]),
        StagedFile("bad/header_claims_20s.wav",
                   _declare_wav_data(speech_wav[:44 + 2 * RATE * 5 // 2], 2 * RATE * 20)),
        # one constant value for 5 s: a level, but no sound
        StagedFile("bad/dc_only.wav", encode(np.full(RATE * 5, 0.25, np.float32), "wav")),
    ]


def _declare_wav_data(wav: bytes, size: int) -> bytes:
    """`wav` with its data chunk's declared size replaced by `size`."""
    at = wav.index(b"data", 12)
    return wav[:at + 4] + size.to_bytes(4, "little") + wav[at + 8:]


def odd_files() -> list[StagedFile]:
    """Recordings that are usable but odd: each must come out annotated, with the oddity measured
    (clipping and speech under heavy noise also drop their segments, before any model runs)."""
    import librosa

    from infra.speaker_corpus import joined

    clip = read_audio(LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0880.wav")
    with_nan = clip.copy()
    with_nan[1000:1100] = np.nan   # (inf would be clipped to full scale by encode())
    phone = librosa.resample(librosa.resample(clip, orig_sr=RATE, target_sr=8000),
                             orig_sr=8000, target_sr=44100)
    two = joined(("librivox", "cmu-cards"), seconds=6.0)
    # the reader under white noise at 5 dB SNR: too noisy to trust any transcript of
    # (measures.min_speech_snr_db), dropped before ASR
    reader = read_audio(LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0930.wav")
    hiss = np.random.default_rng(9).standard_normal(reader.size).astype(np.float32)
    noisy = reader + hiss * np.float32(np.sqrt(np.mean(reader ** 2) / 10 ** 0.5))
    return [
        StagedFile("odd/clipped.flac", encode(clip * 12.0, "flac")),
        StagedFile("odd/nan_samples.wav", encode(with_nan, "wav_float")),
        StagedFile("odd/dc_offset.flac", encode(clip * 0.5 + 0.25, "flac")),
        StagedFile("odd/phone_band_44k.wav", encode(phone, "wav", rate=44100)),
        StagedFile("odd/noisy_speech.flac", encode(noisy / max(1.0, float(np.abs(noisy).max())),
                                                   "flac")),
        StagedFile("speakers/librivox+cmu-cards.flac", encode(two.audio, "flac")),
    ]


def demo_files(small: bool = False) -> list[StagedFile]:
    """The demo corpus; `small` is the few-clip set the integration tests run on."""
    require_sources()
    files: list[StagedFile] = []
    clips = sorted(LIBRIVOX.glob("*.wav"))
    formats = ["wav", "flac", "mp3", "opus", "m4a"]
    for clip, fmt in zip(clips, formats):
        files.append(StagedFile(f"librivox/{clip.stem}{FORMATS[fmt][2]}",
                                encode(read_audio(clip), fmt)))
    cards = sorted((POCKETSPHINX / "cards").glob("*.wav"))
    for clip in cards[:2] if small else cards:
        files.append(StagedFile(f"cmu_cards/{clip.name}", clip.read_bytes()))
    effects = SOUND_EFFECTS[:2] if small else SOUND_EFFECTS
    for rel in effects + (DESCRIPTIONS[:2] if small else DESCRIPTIONS):
        path = TUXPAINT / rel
        sub = "descriptions" if "_desc" in path.name else "sound_effects"
        files.append(StagedFile(f"tuxpaint/{sub}/{path.name}", path.read_bytes()))
    files += planted_bad_files() + odd_files()
    return files


def bench_files(minutes: float = 24.0, seed: int = 11) -> list[StagedFile]:
    """>= `minutes` of real audio as ~60 s FLAC recordings: speech (LibriVox, CMU, spoken
    descriptions in many languages) and sound effects, joined with short pauses."""
    require_sources()
    rng = random.Random(seed)
    speech = sorted(LIBRIVOX.glob("*.wav")) + sorted((POCKETSPHINX / "cards").glob("*.wav"))
    descriptions = sorted(TUXPAINT.rglob("*_desc*.ogg"))
    effects = sorted(p for p in TUXPAINT.rglob("*.ogg")
                     if "_desc" not in p.name and "/symbols/" not in str(p))
    rng.shuffle(descriptions)
    pool = [(p, "speech") for p in speech] * 3 + [(p, "desc") for p in descriptions[:600]] \
        + [(p, "effect") for p in effects]
    rng.shuffle(pool)
    files, current, total, index = [], [], 0.0, 0
    pause = np.zeros(int(0.6 * RATE), np.float32)
    for path, _ in pool:
        audio = read_audio(path)
        current += [audio, pause]
        length = sum(a.size for a in current) / RATE
        if length >= 60.0:
            files.append(StagedFile(f"mixed/recording-{index:03d}.flac",
                                    encode(np.concatenate(current), "flac")))
            total += length
            current, index = [], index + 1
            if total >= minutes * 60:
                break
    return files


def stage(files: list[StagedFile], uri: str, client=None) -> dict:
    """Upload `files` under `uri`, skipping objects already there with the same size."""
    from model_serving.s3client import make_s3_client, split_uri
    from schemas.config import StorageConfig

    client = client or make_s3_client(StorageConfig())
    bucket, prefix = split_uri(uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    try:
        client.head_bucket(Bucket=bucket)
    except client.exceptions.ClientError:
        client.create_bucket(Bucket=bucket)
    existing = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            existing[obj["Key"]] = obj["Size"]
    uploaded = 0
    for f in files:
        key = prefix + f.key
        if existing.get(key) == len(f.body):
            continue
        client.put_object(Bucket=bucket, Key=key, Body=f.body)
        uploaded += 1
    return {"objects": len(files), "uploaded": uploaded,
            "bytes": sum(len(f.body) for f in files)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.demo_corpus",
                                     description="Stage real demo or benchmark audio into S3.")
    parser.add_argument("kind", choices=["demo", "bench"])
    parser.add_argument("--uri", required=True, help="target prefix, e.g. s3://bucket/raw/")
    parser.add_argument("--minutes", type=float, default=24.0, help="bench corpus length")
    args = parser.parse_args(argv)
    files = demo_files() if args.kind == "demo" else bench_files(args.minutes)
    result = stage(files, args.uri)
    print(f"staged {args.kind} corpus at {args.uri}: {result['objects']} objects "
          f"({result['uploaded']} uploaded, {result['bytes'] / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
