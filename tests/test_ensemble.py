"""An ensemble of members used as one classifier: its output, its training step, its checkpoint."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from entromix.modeling.ensemble import Ensemble, build_ensemble, mean_probability_logits, members
from entromix.modeling.fit import BatchPrep, train_epoch

CPU = torch.device("cpu")


def linear_members(k: int = 3) -> Ensemble:
    torch.manual_seed(0)
    return Ensemble([nn.Sequential(nn.Flatten(), nn.Linear(12, 2)) for _ in range(k)])


def test_eval_output_is_the_log_of_the_members_mean_probability():
    model = linear_members().eval()
    x = torch.randn(5, 3, 2, 2)
    expected = torch.stack([torch.softmax(m(x), 1) for m in model.members]).mean(0)
    torch.testing.assert_close(torch.softmax(model(x), 1), expected)
    torch.testing.assert_close(torch.exp(model(x)).sum(1), torch.ones(5))  # already log-probabilities


def test_training_output_is_every_members_logits_and_takes_one_batch_each():
    model = linear_members().train()
    x = torch.randn(4, 3, 2, 2)
    out = model(x)
    assert out.shape == (3, 4, 2)
    torch.testing.assert_close(out[1], model.members[1](x))
    batches = [torch.randn(4, 3, 2, 2) for _ in range(3)]
    torch.testing.assert_close(model(batches)[2], model.members[2](batches[2]))
    with pytest.raises(ValueError, match="2 batches for an ensemble of 3"):
        model(batches[:2])


def test_mean_probability_logits_of_one_member_is_its_log_softmax():
    logits = torch.randn(1, 6, 3)
    torch.testing.assert_close(mean_probability_logits(logits), torch.log_softmax(logits[0], 1))


def test_build_ensemble_of_one_is_the_network_itself():
    net = build_ensemble(lambda: nn.Linear(2, 2), 1)
    assert isinstance(net, nn.Linear) and members(net) == [net]
    torch.manual_seed(0)
    ens = build_ensemble(lambda: nn.Linear(2, 2), 3)
    assert len(members(ens)) == 3
    assert not torch.equal(ens.members[0].weight, ens.members[1].weight)  # each draws its own weights
    with pytest.raises(ValueError):
        build_ensemble(lambda: nn.Linear(2, 2), 0)


def test_a_training_step_trains_each_member_on_its_own_loss():
    """The step's loss is the mean of the members' losses, and member k's gradient is that of its own
    loss alone (here with SGD: the update of each member equals a step on its own loss)."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (8, 4, 4, 3), dtype=torch.uint8)
    labels = torch.tensor([0, 1] * 4)
    model = Ensemble([nn.Sequential(nn.Flatten(), nn.Linear(48, 2)) for _ in range(2)])
    copies = [nn.Sequential(nn.Flatten(), nn.Linear(48, 2)) for _ in range(2)]
    for copy, member in zip(copies, model.members):
        copy.load_state_dict(member.state_dict())
    prep = BatchPrep(4)  # no augmentation: every member sees the same batch
    x = prep(images)
    member_losses = [F.cross_entropy(copy(x), labels) for copy in copies]
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda step: 1.0)
    stats = train_epoch(
        model,
        [torch.arange(8)],
        images,
        lambda logits, idx: F.cross_entropy(logits, labels[idx]),
        optim,
        sched,
        prep,
        CPU,
    )
    assert stats.loss == pytest.approx(float(torch.stack(member_losses).mean().detach()), rel=1e-5)
    for copy, member, loss in zip(copies, model.members, member_losses):
        grads = torch.autograd.grad(loss / 2, list(copy.parameters()))  # the mean over 2 members
        for p_copy, p_member, g in zip(copy.parameters(), member.parameters(), grads):
            torch.testing.assert_close(p_member.detach(), p_copy.detach() - 0.1 * g)


@pytest.mark.slow  # trains a network for more than one epoch
def test_an_ensemble_trains_saves_and_loads_as_one_classifier(tmp_path):
    import test_train as t

    from entromix.evaluation.gradcam import cam_layer, gradcam_maps
    from entromix.training.checkpoints import load_trained_model
    from entromix.training.loop import train_curriculum
    from entromix.training.report import checkpoint_payload

    table, val_x, val_y = t.make_data()
    config = t.make_config(epochs=3, ensemble=2)
    result = train_curriculum(config, t.make_curriculum(warmup_epochs=1), table, val_x, val_y, CPU, log=lambda s: None)
    assert any(k.startswith("members.1.") for k in result.last_state)
    ingest = {"image_size": 32}
    path = tmp_path / "last.pt"
    torch.save(
        checkpoint_payload(result.last_state, result.history[-1], config, ["benign", "malignant"], ingest, {}), path
    )
    trained = load_trained_model(path, ["benign", "malignant"], CPU)
    assert isinstance(trained.model, Ensemble) and trained.checkpoint["ensemble"] == 2
    probs = trained.probabilities(val_x)
    assert probs.shape == (len(val_y), 2) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    target = cam_layer(trained.model, "resnet18", 32, CPU)
    assert len(target.targets) == 2 and "of each of 2 members" in target.name
    maps, _ = gradcam_maps(trained.model, target.targets, val_x[:2], [1, 0], 32, trained.channels_last, CPU)
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all()
