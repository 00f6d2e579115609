"""Config is parsed strictly: unknown or mistyped keys are errors that name the key."""
import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from tests.conftest import LOCAL_CONFIG


def test_local_config_parses_with_expected_defaults():
    cfg = load_config(LOCAL_CONFIG)
    assert cfg.input.uri == "s3://audioverse-demo/raw/"
    assert [s.name for s in cfg.asr.systems] == ["whisper-base", "whisper-tiny-en",
                                                 "moonshine-base-en"]
    assert all(s.model in cfg.models for s in cfg.asr.systems)
    assert cfg.segment.vad_model in cfg.models and cfg.agreement.min_voters == 2
    assert cfg.models["asr/whisper-base"].files["model.bin"].parts[1].endswith("part2")
    assert cfg.ray.resources["asr"].num_cpus == 2.0 and "vad" not in cfg.ray.resources


def test_cluster_config_parses_and_names_production_models():
    cfg = load_config(LOCAL_CONFIG.parent / "cluster.yaml")
    assert cfg.ray.address == "auto"
    large = cfg.models[cfg.asr.systems[0].model]
    assert large.source == "path" and "large-v3" in large.location
    families = {cfg.models[s.model].family for s in cfg.asr.systems}
    assert families == {"whisper-ct2", "moonshine-onnx"}  # two independent families
    assert cfg.ray.resources["asr"].num_gpus == 1.0
    assert cfg.models[cfg.events.model].family == "panns-cnn14" and cfg.events.device == "cuda"


def test_set_overrides_are_typed_and_nested():
    cfg = load_config(LOCAL_CONFIG, ["asr.batch_size=3", "segment.target_s=15",
                                     "ray.resources.vad.concurrency=2", "input.limit=4"])
    assert cfg.asr.batch_size == 3
    assert cfg.segment.target_s == 15.0 and isinstance(cfg.segment.target_s, float)
    from operators.vad import VadSegmentStage
    vad = cfg.ray.resources["vad"].apply(VadSegmentStage.resources)
    assert vad.concurrency == 2 and vad.num_cpus == VadSegmentStage.resources.num_cpus
    assert cfg.input.limit == 4


@pytest.mark.parametrize("override, named", [
    ("asr.batch_sise=4", "asr.batch_sise"),                       # typo in a leaf
    ("segmnet.threshold=0.4", "segmnet"),                         # typo in a section
    ("ray.resources.asr.num_gpu=1", "ray.resources.asr.num_gpu"),  # inside a dict of sections
    ("models.asr/whisper-base.sha=abc", "models.asr/whisper-base.sha"),
    ("ray.resources.tokenise.num_cpus=1", "ray.resources.tokenise"),  # no such stage
])
def test_unknown_key_is_an_error_naming_it(override, named):
    with pytest.raises(ConfigError) as err:
        load_config(LOCAL_CONFIG, [override])
    assert named in str(err.value)


@pytest.mark.parametrize("override, suggested", [
    ("asr.batchsize=4", "did you mean asr.batch_size?"),
    ("segmnet.threshold=0.4", "did you mean segment?"),
    ("ray.resources.speaker_embedd.num_cpus=1", "did you mean ray.resources.speaker_embed?"),
])
def test_a_typo_gets_the_closest_key_suggested(override, suggested):
    with pytest.raises(ConfigError) as err:
        load_config(LOCAL_CONFIG, [override])
    assert suggested in str(err.value)


def test_a_key_like_no_other_gets_no_suggestion():
    with pytest.raises(ConfigError) as err:
        load_config(LOCAL_CONFIG, ["asr.qqqqqq=1"])
    assert "asr.qqqqqq" in str(err.value) and "did you mean" not in str(err.value)


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError) as err:
        load_config(LOCAL_CONFIG, ["asr.batch_size=many"])
    assert "asr.batch_size" in str(err.value) and "many" in str(err.value)


def test_missing_required_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("output: {uri: 's3://b/'}\nmodels: {}\n")
    with pytest.raises(ConfigError, match="input"):
        load_config(path)


@pytest.mark.parametrize("override, message", [
    ("input.uri=/local/path", "input.uri"),
    ("run.max_failed_fraction=1.5", "max_failed_fraction"),
    ("segment.max_speech_s=45", "max_speech_s"),
    ("asr.systems=[{name: x, model: asr/unknown}]", "asr/unknown"),
    ("asr.systems=[]", "asr.systems is empty"),
    ("agreement.unverified_policy=ignore", "unverified_policy"),
    ("measures.clip_level=1.5", "measures.clip_level"),
    ("measures.pitch_fmin_hz=600", "pitch_fmin_hz"),
    ("events.top_k=0", "events.top_k"),
    ("events.model=events/unknown", "events/unknown"),
    ("speakers.hop_s=3", "speakers.hop_s"),
    ("speakers.model=speakers/unknown", "speakers/unknown"),
])
def test_values_are_validated(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(LOCAL_CONFIG, [override])


def test_bad_set_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(LOCAL_CONFIG, ["asr.batch_size"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


# Values that used to pass the load and then crashed a run after it took the lock, or quietly
# rejected every input (and wrote that into the ledger). Each is now a config error (exit 2)
# naming its key, before anything is read or written.
@pytest.mark.parametrize("override, named", [
    ("run.partition_objects=0", "run.partition_objects"),
    ("run.partition_objects=-1", "run.partition_objects"),
    ("run.partition_objects=true", "run.partition_objects"),  # a bool is not a number
    ("asr.batch_size=0", "asr.batch_size"),
    ("decode.max_duration_s=.nan", "decode.max_duration_s"),
    ("decode.max_duration_s=.inf", "decode.max_duration_s"),
    ("decode.max_duration_s=-1", "decode.max_duration_s"),
    ('input.extensions=["wav"]', "input.extensions"),
    ('input.skip_extensions=[".wav"]', "input.skip_extensions"),
    ("input.max_object_bytes=-5", "input.max_object_bytes"),
    ("segment.threshold=2", "segment.threshold"),
    ("decode.min_decoded_fraction=7", "decode.min_decoded_fraction"),
    ("run.lock_ttl_s=0", "run.lock_ttl_s"),
    ("run.log_level=LOUD", "run.log_level"),
    ("ray.resources.asr.concurrency=0", "ray.resources.asr.concurrency"),
    ("asr.systems=[{name: a, model: asr/whisper-base, cpu_threads: 0}]",
     "asr.systems[0].cpu_threads"),
    ("release.quality.weights.speech.snr=.nan", "release.quality.weights.speech.snr"),
    ("caption.backoff_max_s=0.1", "caption.backoff_base_s"),
])
def test_a_value_out_of_range_is_a_config_error_naming_its_key(override, named):
    with pytest.raises(ConfigError) as err:
        load_config(LOCAL_CONFIG, [override])
    assert named in str(err.value), str(err.value)


def test_every_numeric_field_of_the_shipped_configs_is_in_range():
    from pipeline.config import check_values

    for name in ("local.yaml", "cluster.yaml"):
        assert check_values(load_config(LOCAL_CONFIG.parent / name)) is None


@pytest.mark.parametrize("override", ["decode.max_duration_s=-1", "run.partition_objects=0"])
def test_dry_run_refuses_a_bad_value_with_exit_2_before_reading_anything(override, capsys):
    from pipeline.cli import main

    # No S3 server is needed: the config fails first.
    code = main(["run", str(LOCAL_CONFIG), "--dry-run", "--set", override,
                 "--set", "storage.endpoint_url=http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 2 and override.split("=")[0] in err and "Traceback" not in err


def test_an_unknown_reprocess_reason_is_a_config_error(capsys):
    from pipeline.cli import main

    code = main(["run", str(LOCAL_CONFIG), "--dry-run", "--reprocess", "asr_disagrement",
                 "--set", "storage.endpoint_url=http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 2 and "asr_disagrement" in err and "asr_disagreement" in err
