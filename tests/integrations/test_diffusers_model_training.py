"""diffusers' training checks on teachers and students: backward, gradient checkpointing, EMAModel."""

import copy

import pytest
import torch
from diffusers.training_utils import EMAModel

import lindit
from diffusers_cases import ATOL, LATENT, OTHER_LATENT, Case, assert_same_weights, cases


def _loss(case: Case, model, latents=(None,)) -> torch.Tensor:
    """A regression loss over one forward per latent size (fixed targets), in training mode."""
    total = 0
    for i, latent in enumerate(latents):
        torch.manual_seed(i)  # DiT drops class labels at random in training mode: the same drops each time
        out = model(**case.inputs(latent, seed=i), return_dict=False)[0]
        target = torch.randn(out.shape, generator=torch.Generator().manual_seed(100 + i))
        total = total + torch.nn.functional.mse_loss(out, target)
    return total


def _unused_by_the_teacher(case: Case, model) -> set[str]:
    """SD3's last block (context_pre_only) computes prompt queries and discards them: in diffusers' teacher
    those projections get no gradient. Students do not compute them (they have no such parameters)."""
    if case.family != "sd3" or case.is_student:
        return set()
    last = f"transformer_blocks.{len(model.transformer_blocks) - 1}.attn"
    return {f"{last}.{p}" for p in ("add_q_proj.weight", "add_q_proj.bias", "norm_added_q.weight")}


@pytest.mark.parametrize("case", cases())
def test_backward_reaches_every_parameter(case):
    model = case.build().train()
    _loss(case, model).backward()
    dead = {n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}
    assert dead == _unused_by_the_teacher(case, model)


@pytest.mark.parametrize("case", cases())
def test_gradient_checkpointing_gives_the_same_outputs_and_gradients(case):
    """Two forwards of different grids before one backward (as a loss over two sizes does): each checkpointed
    block is recomputed in the backward pass and must see the grid of its own forward."""
    model = case.build().train()
    assert not model.is_gradient_checkpointing
    checkpointed = copy.deepcopy(model)
    checkpointed.enable_gradient_checkpointing()
    assert checkpointed.is_gradient_checkpointing
    calls = {id(m): 0 for m in (model, checkpointed)}
    for m in (model, checkpointed):  # counts calls of the first block's attention (recomputation included)
        block = m.transformer_blocks[0]
        attn = getattr(block, "attn1", None) or block.attn
        attn.register_forward_hook(lambda *_, key=id(m): calls.__setitem__(key, calls[key] + 1))
    latents = (LATENT[case.family], OTHER_LATENT[case.family])
    loss, loss_checkpointed = _loss(case, model, latents), _loss(case, checkpointed, latents)
    assert torch.equal(loss, loss_checkpointed)
    loss.backward()
    loss_checkpointed.backward()
    assert calls == {id(model): 2, id(checkpointed): 4}  # recomputed once per forward in the backward pass
    grads = {n: p.grad for n, p in checkpointed.named_parameters()}
    for name, p in model.named_parameters():
        if p.grad is None:
            assert grads[name] is None, name
        else:
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-7, msg=name)
    checkpointed.disable_gradient_checkpointing()
    assert not checkpointed.is_gradient_checkpointing


@pytest.mark.parametrize("case", cases())
def test_ema_model_steps_saves_reloads_and_copies(tmp_path, case):
    """diffusers' --use_ema path: EMAModel(model_cls=type(model), model_config=model.config)."""
    model = case.build().train()
    ema = EMAModel(model.parameters(), decay=0.9, model_cls=type(model), model_config=model.config)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        _loss(case, model).backward()
        optimizer.step()
        ema.step(model.parameters())
    assert ema.optimization_step == 2
    ema.save_pretrained(tmp_path / "ema")
    reloaded = EMAModel.from_pretrained(tmp_path / "ema", model_cls=type(model))
    assert reloaded.optimization_step == 2 and reloaded.decay == 0.9
    for a, b in zip(ema.shadow_params, reloaded.shadow_params, strict=True):
        assert torch.equal(a, b)
    averaged = case.build(seed=5)
    reloaded.copy_to(averaged.parameters())
    for p, shadow in zip(averaged.parameters(), ema.shadow_params, strict=True):
        assert torch.equal(p, shadow)
    assert not torch.equal(next(iter(ema.shadow_params)), next(model.parameters()))  # an average, not a copy
    saved = type(model).from_pretrained(tmp_path / "ema")  # the EMA folder is a model folder too
    assert_same_weights(averaged.eval(), saved)
    torch.testing.assert_close(case.run(saved), case.run(averaged), rtol=0, atol=ATOL)
    if case.is_student:
        assert_same_weights(averaged, lindit.load(tmp_path / "ema"))
