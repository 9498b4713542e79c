"""TiPAI Tournament Guard: δ, τ_P(t), τ_F(t), α and the audit schedule (steps 5–6)."""

from __future__ import annotations

from comfy_api.latest import io

from ..tipai_core.guard.calibrated_guard import calibrated_guard
from ..tipai_core.guard.calibration_file import Calibration
from . import defaults as D
from . import model_files
from .settings import GuardSpec, audit_schedule, fixed_guard
from .types import Auditor, Guard, parse_list


class TiPAITournamentGuard(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TiPAITournamentGuard",
            display_name="TiPAI Tournament Guard",
            category="TiPAI",
            description="Accepts a candidate only if u_i = (S_i - S_0 - δ)_+ · 1[P_i ≥ τ_P(t)] · 1[F_i ≥ τ_F(t)] · B_i "
            "is positive for the best one; otherwise the latent stays exactly as it was.",
            inputs=[
                io.Float.Input(
                    "delta",
                    default=D.GUARD_DELTA,
                    min=0.0,
                    max=10.0,
                    step=0.001,
                    tooltip="δ: how much a candidate must beat the unedited control by.",
                ),
                io.Float.Input(
                    "tau_P_start",
                    default=D.GUARD_TAU_P[0],
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="τ_P at the start of sampling: minimum policy safety of every class.",
                ),
                io.Float.Input(
                    "tau_P_end", default=D.GUARD_TAU_P[1], min=0.0, max=1.0, step=0.01, tooltip="τ_P at the end."
                ),
                io.Float.Input(
                    "tau_F_start",
                    default=D.GUARD_TAU_F[0],
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="τ_F at the start of sampling: minimum faithfulness.",
                ),
                io.Float.Input(
                    "tau_F_end", default=D.GUARD_TAU_F[1], min=0.0, max=1.0, step=0.01, tooltip="τ_F at the end."
                ),
                io.Float.Input(
                    "alpha",
                    default=D.GUARD_ALPHA,
                    min=0.0,
                    max=1.0,
                    step=0.05,
                    tooltip="α in z ← (1-α·m)·z_ctrl + α·m·z_edit when an edit is accepted.",
                ),
                io.Int.Input(
                    "audit_every", default=D.AUDIT_EVERY, min=1, max=100, tooltip="Audit every this many steps."
                ),
                io.Int.Input("audit_first", default=D.AUDIT_FIRST, min=1, max=1000, tooltip="First audited step."),
                io.Int.Input(
                    "skip_last",
                    default=D.AUDIT_SKIP_LAST,
                    min=0,
                    max=1000,
                    tooltip="Never audit the last this many steps.",
                ),
                io.String.Input(
                    "audit_scales",
                    default=D.as_list_text(D.AUDIT_SCALES),
                    tooltip="Audit resolution over time, coarse early to fine late (1.0 = full size).",
                ),
                io.Combo.Input(
                    "calibration_file",
                    options=model_files.list_files(".json", optional=True),
                    default=model_files.NONE,
                    optional=True,
                    tooltip="A calibration file from python -m tipai_core.train calibrate (models/tipai). "
                    "When set, its δ, τ_P(t) and τ_F(t) replace the values above.",
                ),
                Auditor.Input(
                    "auditor",
                    optional=True,
                    tooltip="The auditor in use: when connected, a calibration file fit for another "
                    "auditor is refused here rather than at sampling time.",
                ),
            ],
            outputs=[Guard.Output(display_name="guard")],
        )

    @classmethod
    def fingerprint_inputs(cls, calibration_file=model_files.NONE, **kwargs):
        # a calibration file rewritten under the same name (a new Stage C fit) must be read again
        return model_files.fingerprint(calibration_file, "calibration")

    @classmethod
    def execute(
        cls,
        delta,
        tau_P_start,
        tau_P_end,
        tau_F_start,
        tau_F_end,
        alpha,
        audit_every,
        audit_first,
        skip_last,
        audit_scales,
        calibration_file=model_files.NONE,
        auditor=None,
    ) -> io.NodeOutput:
        if calibration_file and calibration_file != model_files.NONE:
            try:
                cal = Calibration.load(model_files.resolve(calibration_file, "calibration"))
                if auditor is not None:
                    cal.check_auditor(getattr(auditor, "name", None), getattr(auditor.auditor, "classes", None))
            except ValueError as exc:
                raise ValueError(f"TiPAI Tournament Guard: {calibration_file}: {exc}") from None
            guard = calibrated_guard(cal)
        else:
            guard = fixed_guard(delta, (tau_P_start, tau_P_end), (tau_F_start, tau_F_end))
        scales = parse_list(audit_scales, float, "TiPAI Tournament Guard", "audit_scales")
        schedule = audit_schedule(audit_every, audit_first, skip_last, scales)
        return io.NodeOutput(GuardSpec(guard, schedule, alpha))
