"""The closed vocabulary of reject and drop reasons, so auditors can GROUP BY them.

Rejects are recordings that yield no segment; drops are segments that keep their row but are not
eligible for training. The `detail` columns carry the human message.
"""
# Recording-level (rejects table).
UNSUPPORTED_EXTENSION = "unsupported_extension"
EMPTY_OBJECT = "empty_object"
OBJECT_TOO_LARGE = "object_too_large"
READ_ERROR = "read_error"          # the object could not be read from storage
UNDECODABLE = "undecodable"        # not audio, or a container/codec the decoder cannot open
NO_AUDIO_STREAM = "no_audio_stream"
TRUNCATED = "truncated"            # decoded far less than the container declares
TOO_LONG = "too_long"
DIGITAL_SILENCE = "digital_silence"
NO_AUDIBLE_CONTENT = "no_audible_content"  # neither speech nor sound above the floor

# Segment-level (annotations.drop_reason).
TOO_SHORT = "too_short"
ASR_ERROR = "asr_error"
EMPTY_TRANSCRIPT = "empty_transcript"

REJECT_REASONS = frozenset({
    UNSUPPORTED_EXTENSION, EMPTY_OBJECT, OBJECT_TOO_LARGE, READ_ERROR, UNDECODABLE,
    NO_AUDIO_STREAM, TRUNCATED, TOO_LONG, DIGITAL_SILENCE, NO_AUDIBLE_CONTENT,
})
DROP_REASONS = frozenset({TOO_SHORT, ASR_ERROR, EMPTY_TRANSCRIPT})
