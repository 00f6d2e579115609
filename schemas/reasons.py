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
CLIPPING = "clipping"                    # more clipped samples than measures.max_clipped_ratio
LOW_SNR_SPEECH = "low_snr_speech"        # speech under measures.min_speech_snr_db (before ASR)
ASR_ERROR = "asr_error"                  # a system crashed or timed out on it (detail names it)
UNVERIFIED = "unverified"                # fewer systems than agreement.min_voters could vote
ASR_DISAGREEMENT = "asr_disagreement"    # the systems disagree beyond agreement.threshold
EMPTY_TRANSCRIPT = "empty_transcript"    # no words, on speech the VAD is sure of
HALLUCINATION_REPETITION = "hallucination_repetition"
HALLUCINATION_CHAR_RATE = "hallucination_char_rate"
HALLUCINATION_LONG_WORD = "hallucination_long_word"
HALLUCINATION_LENGTH = "hallucination_length"
CAPTION_ERROR = "caption_error"          # the caption endpoint failed on it after retries
CAPTION_INVALID = "caption_invalid"      # the reply could not be made a valid caption

REJECT_REASONS = frozenset({
    UNSUPPORTED_EXTENSION, EMPTY_OBJECT, OBJECT_TOO_LARGE, READ_ERROR, UNDECODABLE,
    NO_AUDIO_STREAM, TRUNCATED, TOO_LONG, DIGITAL_SILENCE, NO_AUDIBLE_CONTENT,
})
DROP_REASONS = frozenset({
    TOO_SHORT, CLIPPING, LOW_SNR_SPEECH, ASR_ERROR, UNVERIFIED, ASR_DISAGREEMENT,
    EMPTY_TRANSCRIPT, HALLUCINATION_REPETITION, HALLUCINATION_CHAR_RATE, HALLUCINATION_LONG_WORD,
    HALLUCINATION_LENGTH, CAPTION_ERROR, CAPTION_INVALID,
})
