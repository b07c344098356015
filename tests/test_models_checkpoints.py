"""Training checkpoints restore model, optimiser, scheduler, generator and extras exactly."""

from __future__ import annotations

import torch

from dermnode.models.checkpoints import load_checkpoint, save_checkpoint


def _run(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    generator = torch.Generator().manual_seed(seed)
    return model, optimizer, scheduler, generator


def test_resume_continues_where_the_run_stopped(tmp_path):
    model, optimizer, scheduler, generator = _run(0)
    model(torch.randn(4, 3, generator=generator)).sum().backward()
    optimizer.step()
    scheduler.step()
    save_checkpoint(tmp_path / "c.pt", 3, model, optimizer, generator, scheduler, history=[{"epoch": 3}])

    fresh, fresh_opt, fresh_sched, fresh_gen = _run(1)
    epoch, extra = load_checkpoint(tmp_path / "c.pt", fresh, fresh_opt, fresh_gen, fresh_sched)
    assert epoch == 3 and extra == {"history": [{"epoch": 3}]}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    assert fresh_sched.get_last_lr() == scheduler.get_last_lr()
    assert torch.equal(torch.rand(5, generator=fresh_gen), torch.rand(5, generator=generator))
    assert not list(tmp_path.glob("*.tmp"))


def test_no_checkpoint_means_epoch_zero(tmp_path):
    model, optimizer, scheduler, generator = _run(0)
    before = [p.clone() for p in model.parameters()]
    assert load_checkpoint(tmp_path / "missing.pt", model, optimizer, generator, scheduler) == (0, {})
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
