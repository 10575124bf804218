"""One combined DANN update (one backward on the summed losses, G_f and G_d each run once on
both batches) equals the homework's three backward calls: the same gradients (to 1e-10 in
float64), hence the same optimizer step."""
import torch
import torch.nn.functional as F

from dann.config import make_config
from dann.discriminators import grad_reverse
from dann.methods import build


def dann_alexnet(alpha: float = 0.7):
    torch.manual_seed(0)
    config = make_config(method="dann", backbone="alexnet", pretrained="none", recipe="homework", alpha=alpha)
    return build(config, num_classes=7).double()  # float64: the comparison tests the math, not rounding


def three_backward_calls(model, x_s, y_s, x_t, alpha):
    """The homework code's formulation: three losses, three backward calls; the gradients
    accumulate in .grad."""
    F.cross_entropy(model.classifier(model.features(x_s)), y_s).backward()
    d_s = model.adversary.discriminator(grad_reverse(model.features(x_s), alpha))
    F.cross_entropy(d_s, torch.zeros(len(x_s), dtype=torch.long)).backward()
    d_t = model.adversary.discriminator(grad_reverse(model.features(x_t), alpha))
    F.cross_entropy(d_t, torch.ones(len(x_t), dtype=torch.long)).backward()


def test_combined_update_equals_three_backward_calls():
    # Dropout off: the one-pass G_d draws its masks for both batches at once, the homework's
    # calls one batch at a time, so equal masks would need equal call orders. The math is compared.
    model = dann_alexnet(alpha=0.7).eval()
    # 64x64 inputs keep it fast; the adaptive avgpool still gives fc6 its 9216 features
    x_s, x_t = torch.randn(3, 3, 64, 64).double(), torch.randn(3, 3, 64, 64).double()
    y_s = torch.tensor([0, 3, 6])
    model.zero_grad(set_to_none=True)
    three_backward_calls(model, x_s, y_s, x_t, 0.7)
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())  # every branch received gradient
    # The combined loss's backward, its sign flipped, leaves in .grad the three calls' gradient
    # minus its own: one float64 gradient beside the weights, no copies (the check held 5 GB before).
    loss, _ = model.step(x_s, y_s, x_t, progress=0.3)  # constant alpha: progress does not matter
    (-loss).backward()
    # float64 rounding leaves 1e-16 here; an alpha 1% off in the three calls leaves 6e-6
    for name, p in model.named_parameters():
        assert p.grad.abs().max() <= 1e-10, name


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
