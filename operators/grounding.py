"""Grounding check of a caption's description, and the description composed from the facts.

A description is kept as the model wrote it only when everything it asserts can be traced to the
transcript or to what the pipeline measured. `problems()` lists what cannot:

- name:<word>      a capitalised name (people, places, organisations, titles such as "Dr") that is
                   in neither the transcript nor the facts (the measured language, the tags);
- number:<token>   a number that is not in the transcript and is not a measured count;
- contradicts:<x>  a claim against a measured field: animals with no animal tagged, music with no
                   music tagged, a voice or speaker in a segment without speech, "no audio" in a
                   segment the pipeline kept for its content, a language other than the measured
                   one;
- gender:<word>    a woman or a man where the measured genders do not say so (contradicted or
                   never measured: a text model cannot hear a voice);
- contradicts:indoor/outdoor/speaker_count, unsupported:equipment: a room, a street, several
                   people, a microphone or a screen that no measurement allows;
- meta:<phrase>    talk about the prompt instead of the audio ("the features", "the transcript",
                   JSON), a refusal ("I'm sorry", "cannot hear"), or only tag names in a row;
- speculates:<phrase>  a guess about people or events ("may have been involved", "reportedly",
                   "is not known to be married"): a description says what was heard, not a story
                   (the phrase in the transcript itself is fine: a reading may say "perhaps");
- copies:transcript  60% or more of it copied from the transcript in runs of 4+ words (the
                   description of a reading is not the reading; quoting a phrase is fine);
- loop:...         the same sentence twice.
Numbers equal to a measured feature the model saw (duration, SNR, loudness, pitch, bandwidth,
speaking rate, within 1%) and units (Hz, dB, LUFS) are facts, not inventions.

Words the transcript contains are always allowed: a reading about a badger may say "badger".
When any problem is found, the caption keeps the deterministic `template()` sentence instead and
records the problems (caption_grounding) and the source (caption_description_source = template).
"""
from __future__ import annotations

import re

from model_serving.audioset import ANIMAL_MIDS, MUSIC_MIDS
from operators.caption_evidence import environment_candidates, heard_tags, speaker_genders

LANGUAGE_NAMES = {
    "en": "English", "fr": "French", "es": "Spanish", "de": "German", "it": "Italian",
    "pt": "Portuguese", "nl": "Dutch", "ru": "Russian", "uk": "Ukrainian", "be": "Belarusian",
    "pl": "Polish", "cs": "Czech", "sk": "Slovak", "ro": "Romanian", "el": "Greek",
    "tr": "Turkish", "ar": "Arabic", "he": "Hebrew", "fa": "Persian", "hi": "Hindi",
    "bn": "Bengali", "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "vi": "Vietnamese",
    "th": "Thai", "id": "Indonesian", "ms": "Malay", "sv": "Swedish", "no": "Norwegian",
    "nb": "Norwegian", "da": "Danish", "fi": "Finnish", "hu": "Hungarian", "ca": "Catalan",
    "gl": "Galician", "eu": "Basque", "hr": "Croatian", "sr": "Serbian", "bg": "Bulgarian",
    "lt": "Lithuanian", "lv": "Latvian", "et": "Estonian", "sl": "Slovenian", "ta": "Tamil",
    "te": "Telugu", "ur": "Urdu", "sw": "Swahili", "af": "Afrikaans", "cy": "Welsh",
    "ga": "Irish", "is": "Icelandic", "ka": "Georgian", "hy": "Armenian", "km": "Khmer",
}
_LANGUAGE_WORDS = {name.lower() for name in LANGUAGE_NAMES.values()}
NUMBER_WORDS = {
    "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "hundred": 100, "thousand": 1000, "million": 1000000,
}
# "one" is left out: "one sentence", "one of the" are not claims of a count.
SPECIES_WORDS = {"dog", "dogs", "cat", "cats", "bird", "birds", "horse", "horses", "cow", "cows",
                 "frog", "frogs", "pig", "pigs", "chicken", "chickens", "hen", "rooster", "duck",
                 "ducks", "goose", "sheep", "goat", "goats", "lion", "lions", "tiger", "tigers",
                 "owl", "mouse", "mice", "bee", "bees", "whale", "wolf", "monkey", "elephant"}
ANIMAL_WORDS = {"animal", "animals", "creature", "creatures", "pet", "pets", "wildlife",
                "insect", "insects", "nimble-footed", "bark", "barking", "meow", "roar"
                } | SPECIES_WORDS
MUSIC_WORDS = {"music", "musical", "song", "songs", "melody", "instrument", "instruments",
               "singing", "sings", "singer", "band", "orchestra", "guitar", "piano", "drum",
               "drums", "violin"}
SPEECH_WORDS = {"speaker", "speakers", "speaks", "speaking", "speech", "talks", "talking",
                "says", "said", "voice", "voices", "narrator", "narrates", "lecture",
                "interview", "conversation", "dialogue", "reads", "reading", "words"}
NOTHING_PHRASES = ("no audio", "no sound", "no voice", "without audio", "without sound",
                   "silent recording", "nothing is heard", "nothing can be heard", "is silent",
                   "complete silence", "no speech")
FEMALE_WORDS = {"woman", "women", "female", "girl", "she", "her", "lady", "herself"}
MALE_WORDS = {"man", "men", "male", "boy", "he", "his", "him", "gentleman", "himself"}
TITLES = {"dr", "mr", "mrs", "ms", "prof", "sir"}
UNITS = {"hz", "khz", "db", "dbfs", "lufs", "snr", "s", "ms", "i"}  # never names
# A description is about the audio, not about the prompt: talk of the features, the transcript
# or JSON, and refusals, are not descriptions (the models in make bench-caption wrote these).
META_PHRASES = ("features", "transcript", "json", "sound events", "not able to hear",
                "cannot hear", "can't hear", "i'm sorry", "as an ai", "not a recording",
                "the prompt", "not sure", "is unknown", "not identified", "unknown", "unkown",
                "not available")
# Claims about where and with what it was recorded: only where the evidence allows them
INDOOR_WORDS = {"room", "indoors", "indoor", "studio", "hall", "kitchen", "office", "inside"}
OUTDOOR_WORDS = {"outdoors", "outdoor", "outside", "street", "forest", "park", "field", "beach",
                 "woods"}
EQUIPMENT_WORDS = {"microphone", "device", "usb", "video", "camera", "screen", "teleprompter",
                   "internet", "headphones", "speakerphone", "recorder"}
MANY_PEOPLE = {"speakers", "people", "voices", "persons", "audience", "several", "multiple",
               "group", "crowd", "they", "conversation", "dialogue", "interview", "discussion",
               "debate"}
# Hedged claims about people or events: the small text models spin stories from a transcript
# ("He may have been involved in some kind of scandal", make demo)
SPECULATION_PHRASES = ("may have been", "might have been", "may have had", "has been reported",
                       "have been reported", "is reported", "reportedly", "is not known",
                       "is believed", "allegedly", "rumored", "rumoured", "probably", "perhaps",
                       "possibly", "presumably", "it is likely", "is said to")
# A description that is mostly the transcript copied (runs of COPY_RUN words or more cover
# COPY_SHARE of it) is not a description; quoting a phrase of it is ("says the call cannot be
# completed as dialed").
COPY_RUN, COPY_SHARE = 4, 0.6
GENERIC_TAGS = {"Sound effect", "Silence", "Noise", "Environmental noise"}  # say nothing

_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*|\d+(?:[.,]\d+)?")
_SENTENCE_START = re.compile(r"(?:^|[.!?]\s+|[:;]\s+|\n\s*|[\"'(]\s*)([A-Za-z][A-Za-z'\-]*)")
FEATURE_NUMBERS = ("duration_s", "snr_db", "loudness_lufs", "pitch_mean_hz", "bandwidth_hz",
                   "speaking_rate")


def _words(text: str | None) -> list[str]:
    return _WORD.findall(text or "")


def _norm(word: str) -> str:
    word = word.lower().strip("'-")
    return word[:-2] if word.endswith("'s") else word


def _fact_words(row: dict) -> set[str]:
    """Words the measured facts contribute: the heard tags' names and the language's name."""
    out = set()
    for tag in heard_tags(row):
        out |= {_norm(w) for w in _words(tag.get("name"))}
    name = LANGUAGE_NAMES.get(row.get("language") or "")
    if name:
        out.add(name.lower())
    return out


def copied_share(words: list[str], transcript: list[str]) -> float:
    """The share of `words` inside runs of at least COPY_RUN words that also occur, in order, in
    `transcript`."""
    if len(words) < COPY_RUN or len(transcript) < COPY_RUN:
        return 0.0
    runs = {tuple(transcript[i:i + COPY_RUN]) for i in range(len(transcript) - COPY_RUN + 1)}
    covered = [False] * len(words)
    for i in range(len(words) - COPY_RUN + 1):
        if tuple(words[i:i + COPY_RUN]) in runs:
            covered[i:i + COPY_RUN] = [True] * COPY_RUN
    return sum(covered) / len(words)


def problems(description: str, row: dict, genders: list[str] | None = None) -> list[str]:
    """Everything in `description` that the transcript and the facts do not support. `genders`:
    the caption's speaker genders (a model that hears may know one the pitch did not tell);
    by default the measured ones."""
    transcript = {_norm(w) for w in _words(row.get("transcript"))}
    facts = _fact_words(row)
    allowed = transcript | facts
    words = _words(description)
    lowered = [_norm(w) for w in words]
    found: list[str] = []

    allowed |= UNITS
    # names: capitalised words that do not open a sentence, and titles anywhere
    starts = {m.start(1) for m in _SENTENCE_START.finditer(description)}
    for m in _WORD.finditer(description):
        word = m.group(0)
        if not word[0].isupper() or _norm(word) in allowed:
            continue
        if _norm(word) in TITLES or m.start() not in starts:
            if word.lower() not in _LANGUAGE_WORDS:  # those are checked against the language
                found.append(f"name:{word}")
    # numbers: the transcript's, the speaker count, and the measured features the model saw
    # (rounded as the prompt shows them) are facts; any other number is made up
    counts = {row.get("speaker_count")} - {None}
    measured = [float(row[k]) for k in FEATURE_NUMBERS if row.get(k) is not None]
    for word in lowered:
        try:
            value = float(word.replace(",", "")) if word[0].isdigit() else NUMBER_WORDS.get(word)
        except ValueError:
            value = None
        if value is None or word in transcript or value in counts:
            continue
        if any(abs(abs(value) - abs(m)) <= max(1.0, 0.01 * abs(m)) for m in measured):
            continue
        found.append(f"number:{word}")
    # contradictions with measured fields
    mids = {t.get("mid") for t in heard_tags(row)}
    content = row.get("content_type")
    said = set(lowered) - transcript
    if said & ANIMAL_WORDS and not mids & ANIMAL_MIDS:
        found.append("contradicts:animals")
    elif said & SPECIES_WORDS - facts:   # an animal was tagged, but not this one
        found.append(f"contradicts:animals:{sorted(said & SPECIES_WORDS - facts)[0]}")
    if said & MUSIC_WORDS and not mids & MUSIC_MIDS and content != "music":
        found.append("contradicts:music")
    if content != "speech" and said & SPEECH_WORDS:
        found.append("contradicts:speech")
    text = " ".join(lowered)
    if any(p in text for p in NOTHING_PHRASES):
        found.append("contradicts:no_audio")
    environments = environment_candidates(row)
    if said & INDOOR_WORDS and "indoor" not in environments:
        found.append("contradicts:indoor")
    if said & OUTDOOR_WORDS and "outdoor" not in environments:
        found.append("contradicts:outdoor")
    if said & EQUIPMENT_WORDS:
        found.append("unsupported:equipment")   # nothing here measures the equipment
    if content == "speech" and row.get("speaker_count") == 1 and said & MANY_PEOPLE:
        found.append("contradicts:speaker_count")
    for phrase in META_PHRASES:
        if phrase in text:
            found.append(f"meta:{phrase}")
            break
    spoken = " ".join(_norm(w) for w in _words(row.get("transcript")))
    for phrase in SPECULATION_PHRASES:
        if phrase in text and phrase not in spoken:
            found.append(f"speculates:{phrase}")
            break
    if lowered and set(lowered) <= facts and not description.rstrip().endswith((".", "!")):
        found.append("meta:tag list")  # a bare list of tag names: "Vacuum cleaner", "Dog Grunt"
    if copied_share(lowered, [_norm(w) for w in _words(row.get("transcript"))]) >= COPY_SHARE:
        found.append("copies:transcript")
    sentences = [x.strip().lower() for x in re.split(r"[.!?]+", description) if x.strip()]
    if len(sentences) != len(set(sentences)):
        found.append("loop:repeated sentence")
    measured_language = LANGUAGE_NAMES.get(row.get("language") or "")
    for name in set(LANGUAGE_NAMES.values()):
        if name.lower() in said and name != measured_language:
            found.append(f"contradicts:language:{name}")
    genders = set(speaker_genders(row) if genders is None else genders)
    if said & FEMALE_WORDS and "female" not in genders:
        found.append("gender:female")
    if said & MALE_WORDS and "male" not in genders:
        found.append("gender:male")
    return sorted(set(found), key=found.index)


def _people(genders: list[str]) -> tuple[str, str]:
    """(subject, verb form) for the measured speakers."""
    n = len(genders)
    if n == 1:
        return {"female": "A woman", "male": "A man"}.get(genders[0], "One person"), "speaks"
    if n == 2 and set(genders) == {"female", "male"}:
        return "A woman and a man", "speak"
    if n >= 2:
        words = {2: "Two", 3: "Three", 4: "Four"}.get(n, "Several")
        return f"{words} people", "speak"
    return "Someone", "speaks"


def _background(snr_db: float | None) -> str:
    if snr_db is None:
        return ""
    if snr_db >= 25:
        return "quiet background"
    if snr_db >= 10:
        return "some background noise"
    return "noisy background"


def template(row: dict, environment: str, scene: str) -> str:
    """One sentence from the measured facts only (never the model's words). The baseline the
    caption bench compares every model against."""
    content = row.get("content_type")
    tags = heard_tags(row)
    others = [t["name"] for t in tags if t.get("mid") not in MUSIC_MIDS and not
              t["name"].lower().startswith(("speech", "narration", "conversation"))
              and t["name"] not in GENERIC_TAGS]
    if content == "speech":
        subject, verb = _people(speaker_genders(row))
        language = LANGUAGE_NAMES.get(row.get("language") or "")
        place = {"telephone": " over a telephone line", "indoor": " indoors",
                 "outdoor": " outdoors", "vehicle": " in a vehicle"}.get(environment, "")
        text = f"{subject} {verb}{' ' + language if language else ''}{place}"
        extra = [_background(row.get("snr_db"))]
        if any(t.get("mid") in MUSIC_MIDS for t in tags):
            extra.append("music in the background")
        return "; ".join([text] + [e for e in extra if e]) + "."
    if content == "music":
        kinds = [t["name"] for t in tags if t.get("mid") in MUSIC_MIDS
                 and t["name"] not in ("Music", "Musical instrument")][:2]
        head = "Singing" if scene == "singing" else "Music"
        return head + (f": {', '.join(kinds).lower()}" if kinds else "") + "."
    names = [n.lower() for n in others[:2]]
    return ("Sounds of " + " and ".join(names) + ".") if names else "A recorded sound."
