import torch

from training.backbones import get_backbone
from training.model import param_groups


def _model():
    torch.manual_seed(0)
    model, _ = get_backbone("cifar10_resnet20").transfer_model(4, pretrained=False)
    return model


def test_freeze_sets_requires_grad_false_and_freezes_batchnorm_stats():
    model = _model()
    model.freeze_backbone()
    assert all(not p.requires_grad for stage in model.stages for p in stage.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    bn = model.stages[0][1]
    before = bn.running_mean.clone()
    model.train()
    assert not bn.training and model.head.training
    model(torch.randn(8, 3, 32, 32) * 3 + 1)
    assert torch.equal(bn.running_mean, before)


def test_unfreeze_last_blocks_trains_only_those_stages_and_their_batchnorm():
    model = _model()
    model.unfreeze_last(1)
    model.train()
    trainable = [any(p.requires_grad for p in s.parameters()) for s in model.stages]
    assert trainable == [False, False, False, True]
    last_bn = model.stages[-1][0][0].bn1
    before = last_bn.running_mean.clone()
    model(torch.randn(8, 3, 32, 32))
    assert not torch.equal(last_bn.running_mean, before)
    model.unfreeze_last(-1)
    assert all(p.requires_grad for p in model.parameters())


def test_param_groups_give_the_backbone_a_lower_learning_rate_and_no_decay_on_biases():
    model = _model()
    model.unfreeze_last(2)
    groups = param_groups(model, head_lr=1e-2, backbone_lr=1e-3, weight_decay=0.1)
    by_name = {g["name"]: g for g in groups}
    assert by_name["head"]["lr"] == 1e-2 and by_name["backbone"]["lr"] == 1e-3
    assert by_name["head_no_decay"]["weight_decay"] == 0.0 and by_name["backbone"]["weight_decay"] == 0.1
    n_trainable = sum(1 for p in model.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in groups) == n_trainable


def test_forward_from_a_stage_equals_the_full_forward():
    model = _model().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        mid = model.forward_stages(x, 0, 2)
        assert torch.allclose(model.forward_from(mid, 2), model(x), atol=1e-6)


def test_freeze_batchnorm_keeps_statistics_of_unfrozen_stages_while_their_weights_train():
    model = _model()
    model.unfreeze_last(1)
    model.freeze_batchnorm = True
    model.train()
    bn = model.stages[-1][0][0].bn1
    before = bn.running_mean.clone()
    model(torch.randn(8, 3, 32, 32))
    assert torch.equal(bn.running_mean, before) and bn.weight.requires_grad
