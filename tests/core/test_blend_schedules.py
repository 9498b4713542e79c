"""The latent blend with α(t), the schedules, and the audit schedule."""

from __future__ import annotations

import pytest
import torch

from tipai_core.diffusion.schedules import Schedule, progress
from tipai_core.loop.audit_schedule import AuditSchedule
from tipai_core.loop.blend import alpha_at, latent_blend


def test_latent_blend_formula_and_bit_identity_where_m_is_zero():
    g = torch.Generator().manual_seed(0)
    z_ctrl = torch.randn(1, 4, 6, 6, generator=g)
    z_edit = torch.randn(1, 4, 6, 6, generator=g)
    m = torch.zeros(1, 1, 6, 6)
    m[..., 2:4, 1:5] = torch.tensor([0.25, 0.5, 1.0, 0.75])
    out = latent_blend(z_ctrl, z_edit, m, 0.8)
    w = 0.8 * m
    torch.testing.assert_close(out, (1 - w) * z_ctrl + w * z_edit, rtol=0, atol=0)
    zero = (m == 0).expand_as(z_ctrl)
    assert torch.equal(out[zero], z_ctrl[zero])
    assert torch.equal(latent_blend(z_ctrl, z_edit, m, 0.0), z_ctrl)
    assert torch.equal(latent_blend(z_ctrl, z_edit, torch.ones(1, 1, 6, 6), 1.0), z_edit)


def test_latent_blend_rejects_bad_input():
    z = torch.zeros(1, 4, 6, 6)
    with pytest.raises(ValueError, match="m of shape"):
        latent_blend(z, z, torch.zeros(1, 1, 5, 6), 1.0)
    bad = z.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="z_edit contains NaN"):
        latent_blend(z, bad, torch.zeros(1, 1, 6, 6), 1.0)
    with pytest.raises(ValueError, match="alpha"):
        latent_blend(z, z, torch.zeros(1, 1, 6, 6), 1.5)


def test_schedule_interpolates_linearly_and_clamps():
    s = Schedule((0.2, 0.6, 1.0), (0.0, 1.0, 0.5))
    assert float(s(0.0)) == 0.0
    assert float(s(0.4)) == pytest.approx(0.5)
    assert float(s(0.8)) == pytest.approx(0.75)
    assert float(s(1.0)) == 0.5
    vec = Schedule.linear([0.0, 1.0], [1.0, 0.0])
    assert vec(0.25).tolist() == [0.25, 0.75]
    assert Schedule.from_dict(vec.to_dict()) == vec
    assert alpha_at(Schedule.linear(1.0, 0.5), 0.5) == 0.75
    with pytest.raises(ValueError, match="increasing"):
        Schedule((0.5, 0.5), (1.0, 2.0))
    with pytest.raises(ValueError, match="alpha"):
        alpha_at(2.0, 0.0)
    assert progress(5, 20) == 0.25


def test_audit_schedule_steps_and_resolution():
    sched = AuditSchedule(every=3, first=2, skip_last=2, scales=(0.25, 0.5, 1.0))
    assert sched.steps(20) == [2, 5, 8, 11, 14, 17]
    assert [sched.scale(i, 20) for i in sched.steps(20)] == [0.25, 0.25, 0.5, 0.5, 1.0, 1.0]
    assert not sched.is_audited(19, 20)
    with pytest.raises(ValueError, match="every"):
        AuditSchedule(every=0)
    with pytest.raises(ValueError, match="coarse early"):
        AuditSchedule(scales=(1.0, 0.5))
