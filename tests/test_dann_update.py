"""One combined DANN update (one backward on the summed losses, G_f and G_d each run once on
both batches) equals the homework's three backward calls: same gradients, same parameters
after the step."""
import copy

import torch
import torch.nn.functional as F

from dann.config import make_config
from dann.discriminators import grad_reverse
from dann.methods import build


def dann_alexnet(alpha: float = 0.7):
    torch.manual_seed(0)
    config = make_config(method="dann", backbone="alexnet", pretrained="none", alpha=alpha)  # the homework's settings
    return build(config, num_classes=7).double()  # float64: the comparison tests the math, not rounding


def three_backward_grads(model, x_s, y_s, x_t, alpha):
    """The homework code's formulation: three losses, three backward calls, gradients accumulate."""
    model.zero_grad()
    F.cross_entropy(model.classifier(model.features(x_s)), y_s).backward()
    d_s = model.adversary.discriminator(grad_reverse(model.features(x_s), alpha))
    F.cross_entropy(d_s, torch.zeros(len(x_s), dtype=torch.long)).backward()
    d_t = model.adversary.discriminator(grad_reverse(model.features(x_t), alpha))
    F.cross_entropy(d_t, torch.ones(len(x_t), dtype=torch.long)).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def combined_grads(model, x_s, y_s, x_t):
    model.zero_grad()
    loss, _ = model.step((x_s, y_s), x_t, progress=0.3)  # constant alpha: progress does not matter
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_combined_update_equals_three_backward_calls():
    # Dropout off: the one-pass G_d draws its masks for both batches at once, the homework's
    # calls one batch at a time, so equal masks would need equal call orders. The math is compared.
    model = dann_alexnet(alpha=0.7).eval()
    # 64x64 inputs keep it fast; the adaptive avgpool still gives fc6 its 9216 features
    x_s, x_t = torch.randn(3, 3, 64, 64).double(), torch.randn(3, 3, 64, 64).double()
    y_s = torch.tensor([0, 3, 6])
    reference = three_backward_grads(model, x_s, y_s, x_t, 0.7)
    combined = combined_grads(model, x_s, y_s, x_t)
    assert reference.keys() == combined.keys()
    for name in reference:
        assert torch.allclose(combined[name], reference[name], atol=1e-6, rtol=0), name
    # every branch received gradient, G_f from both losses
    assert all(g.abs().sum() > 0 for g in combined.values())

    # and the optimizer step from either gradient lands on the same weights
    # (one float64 AlexNet at a time beside the model: the check's memory, 8 GB before, halves)
    model.zero_grad(set_to_none=True)
    after = None
    for grads in (reference, combined):
        clone = copy.deepcopy(model)
        optimizer = torch.optim.SGD(clone.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-5)
        for name, p in clone.named_parameters():
            p.grad = grads.pop(name)  # each gradient is needed once more, here
        optimizer.step()
        del optimizer
        if after is None:
            after = clone.state_dict()
        else:
            for name, value in clone.state_dict().items():
                assert torch.allclose(after[name], value, atol=1e-9, rtol=0), name
        del clone


def test_gradient_reversal_flips_the_feature_gradient_of_the_domain_loss():
    """G_f's gradient from the domain loss is -alpha times the plain (unreversed) gradient."""
    model = dann_alexnet().eval()  # no dropout: the two passes see the same network
    x = torch.randn(2, 3, 64, 64).double()
    d = torch.zeros(2, dtype=torch.long)
    F.cross_entropy(model.adversary.discriminator(grad_reverse(model.features(x), 0.5)), d).backward()
    conv1 = model.features.features[0].weight
    reversed_grad = conv1.grad.clone()
    model.zero_grad()
    F.cross_entropy(model.adversary.discriminator(model.features(x)), d).backward()
    assert torch.allclose(reversed_grad, -0.5 * conv1.grad, atol=1e-9)
