"""Probe packs: YAML + safetensors, validated, bound to a model."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import save_file
from synthetic import write_pack

from monitor.errors import PackError
from monitor.pack import load_pack, load_pack_dir


def edit_yaml(path: Path, change) -> None:
    document = yaml.safe_load(path.read_text())
    change(document)
    path.write_text(yaml.safe_dump(document))


def test_a_saved_pack_loads_back_with_its_directions(tmp_path):
    written = write_pack(tmp_path)
    loaded = load_pack(tmp_path / "safety.yaml")
    assert loaded.spec == written.spec
    assert loaded.directions.shape == (2, 576) and loaded.directions.dtype == np.float32
    np.testing.assert_array_equal(loaded.directions, written.directions)
    assert loaded.feature_index == {"f0": 0, "f1": 1}
    assert load_pack(tmp_path / "safety.yaml", with_weights=False).directions is None


def test_pack_made_for_another_model_is_refused_with_the_difference(tmp_path):
    pack = write_pack(tmp_path)
    pack.check_model("SmolLM2-135M-Instruct", 576, 30)
    with pytest.raises(PackError) as err:
        pack.check_model("Llama-3.1-8B", 4096, 32)
    message = str(err.value)
    assert "hidden size 576 != the model's 4096" in message and "30 layers != the model's 32" in message


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda d: d["features"][0].update(layer=30), "layer 30 does not exist in a 30-layer model"),
        (lambda d: d["probes"][0].update(features=["nope"]), "uses features ['nope']"),
        (lambda d: d["features"][1].update(name="f0"), "feature names must be unique"),
        (lambda d: d["probes"][0].update(aggregation="median"), "probes.0.aggregation"),
        (lambda d: d["probes"][0].update(thresold=0.3), "probes.0.thresold: Extra inputs are not permitted"),
        (lambda d: d["probes"][0].pop("threshold"), "probes.0.threshold: Field required"),
        (lambda d: d["probes"][0].update(threshold=float("nan")), "must be finite"),
        (lambda d: d["features"][1].update(activation="jumprelu", threshold=-1), "JumpReLU threshold"),
        (lambda d: d["model"].update(hidden_size=0), "model.hidden_size"),
        (lambda d: d.update(weights="missing.safetensors"), "does not exist"),
        (lambda d: d["probes"][1].update(weights=[1.0]), "weights has 1 entries for 2 features"),
        (lambda d: d["probes"][1].update(weights=[1.0, float("inf")]), "weights and intercept must be finite"),
    ],
)
def test_invalid_pack_yaml_is_refused_naming_file_and_field(tmp_path, change, expected):
    write_pack(tmp_path)
    path = tmp_path / "safety.yaml"
    edit_yaml(path, change)
    with pytest.raises(PackError) as err:
        load_pack(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


@pytest.mark.parametrize(
    "tensors, expected",
    [
        ({"directions": np.zeros((2, 575), np.float32), "bias": np.zeros(2, np.float32)}, "must be [2, 576] and [2]"),
        ({"directions": np.zeros((3, 576), np.float32), "bias": np.zeros(3, np.float32)}, "must be [2, 576] and [2]"),
        ({"directions": np.zeros((2, 576), np.float32)}, "lacks tensors ['bias']"),
        ({"directions": np.full((2, 576), np.nan, np.float32), "bias": np.zeros(2, np.float32)}, "NaN"),
    ],
)
def test_weights_must_match_the_yaml(tmp_path, tensors, expected):
    write_pack(tmp_path)
    save_file(tensors, str(tmp_path / "safety.safetensors"))
    with pytest.raises(PackError) as err:
        load_pack(tmp_path / "safety.yaml")
    assert expected in str(err.value)


def test_weights_that_are_not_safetensors_are_refused(tmp_path):
    write_pack(tmp_path)
    (tmp_path / "safety.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(PackError, match="cannot read"):
        load_pack(tmp_path / "safety.yaml")


def test_float16_weights_are_accepted_as_float32(tmp_path):
    write_pack(tmp_path)
    save_file(
        {"directions": np.ones((2, 576), np.float16), "bias": np.zeros(2, np.float16)},
        str(tmp_path / "safety.safetensors"),
    )
    assert load_pack(tmp_path / "safety.yaml").directions.dtype == np.float32


def test_pack_directory_loads_every_pack(tmp_path):
    write_pack(tmp_path, name="a")
    write_pack(tmp_path, name="b")
    packs = load_pack_dir(tmp_path)
    assert [p.name for p in packs.packs] == ["a", "b"]
    assert packs.probe_count == 4
    assert packs.get("b").version == "1" and packs.get("c") is None


def test_pack_directory_is_all_or_nothing_and_lists_every_problem(tmp_path):
    write_pack(tmp_path, name="a")
    write_pack(tmp_path, name="b")
    edit_yaml(tmp_path / "b.yaml", lambda d: d["probes"][0].update(severity="dire"))
    (tmp_path / "c.yaml").write_text("pack: [broken\n")
    with pytest.raises(PackError) as err:
        load_pack_dir(tmp_path)
    assert "b.yaml" in str(err.value) and "c.yaml" in str(err.value)


def test_probe_names_must_be_unique_across_packs(tmp_path):
    write_pack(tmp_path, name="a", probes=[{"name": "same", "concept": "c", "features": ["f0"], "threshold": 1}])
    write_pack(tmp_path, name="b", probes=[{"name": "same", "concept": "c", "features": ["f0"], "threshold": 1}])
    with pytest.raises(PackError, match="probe name 'same' is defined in more than one pack"):
        load_pack_dir(tmp_path)


def test_missing_pack_directory_names_the_setting(tmp_path):
    with pytest.raises(PackError, match="SAEMON_SIDECAR__PROBES_DIR"):
        load_pack_dir(tmp_path / "absent")
    assert load_pack_dir(None).packs == ()
