"""TiPAI Tournament Guard: δ, τ_P(t), τ_F(t), α and the audit schedule (steps 5–6)."""

from __future__ import annotations

from comfy_api.latest import io

from ..tipai_core.guard.calibrated_guard import calibrated_guard
from ..tipai_core.guard.calibration_file import Calibration
from ..tipai_core.loop.audit_schedule import MAX_SCALE
from . import defaults as D
from . import model_files
from .settings import GuardSpec, audit_schedule, fixed_guard
from .types import Auditor, Guard
from .validation import as_validation, check_widgets, number_list

NODE = "TiPAI Tournament Guard"


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
                    max=D.GUARD_DELTA_MAX,
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
                    options=model_files.list_kind("calibration", optional=True),
                    default=model_files.NONE,
                    optional=True,
                    tooltip="A calibration file from python -m tipai_core.train calibrate (models/tipai). "
                    "When set, its δ, τ_P(t) and τ_F(t) replace the values above.",
                ),
                io.Int.Input(
                    "global_until",
                    default=D.AUDIT_GLOBAL_UNTIL,
                    min=0,
                    max=10000,
                    optional=True,
                    tooltip="Audits before this step are coarse and global: one tournament over the whole image "
                    "(candidates re-noise it by the policy's depth), the control competing; later audits repair "
                    "the mined regions. 0: every audit is local.",
                ),
                Auditor.Input(
                    "auditor",
                    optional=True,
                    tooltip="The auditor in use: when connected, a calibration file fit for another "
                    "auditor is refused here rather than at sampling time.",
                ),
            ],
            outputs=[
                Guard.Output(
                    display_name="guard",
                    tooltip="The guard and its audit schedule: give it to the TiPAI KSampler or Patch Model.",
                )
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, calibration_file=model_files.NONE, **kwargs):
        # a calibration file rewritten under the same name (a new Stage C fit) must be read again
        return model_files.fingerprint(calibration_file, "calibration")

    @classmethod
    def check(
        cls,
        delta=None,
        tau_P_start=None,
        tau_P_end=None,
        tau_F_start=None,
        tau_F_end=None,
        alpha=None,
        audit_every=None,
        audit_first=None,
        skip_last=None,
        audit_scales=None,
        global_until=None,
    ) -> tuple | None:
        """The numbers finite and in range, and the audit scales parsed: (0, 4], coarse to fine, each a
        whole number of pixels per latent pixel at the VAE factor 8."""
        check_widgets(
            cls,
            dict(
                delta=delta,
                tau_P_start=tau_P_start,
                tau_P_end=tau_P_end,
                tau_F_start=tau_F_start,
                tau_F_end=tau_F_end,
                alpha=alpha,
                audit_every=audit_every,
                audit_first=audit_first,
                skip_last=skip_last,
                global_until=global_until,
            ),
        )
        if audit_scales is None:
            return None
        scales = number_list(NODE, "audit_scales", audit_scales, float, 1.0 / D.VAE_FACTOR, MAX_SCALE)
        if any(not float(s * D.VAE_FACTOR).is_integer() for s in scales):
            raise ValueError(
                f"{NODE}: audit_scales times the VAE factor {D.VAE_FACTOR} must be whole numbers "
                f"(0.125, 0.25, 0.5, 1.0, 2.0, ...), got {audit_scales!r}"
            )
        if any(b < a for a, b in zip(scales, scales[1:])):
            raise ValueError(f"{NODE}: audit_scales must not decrease (coarse early, fine late), got {audit_scales!r}")
        return scales

    @classmethod
    def validate_inputs(
        cls,
        delta=None,
        tau_P_start=None,
        tau_P_end=None,
        tau_F_start=None,
        tau_F_end=None,
        alpha=None,
        audit_every=None,
        audit_first=None,
        skip_last=None,
        audit_scales=None,
        global_until=None,
    ):
        return as_validation(
            lambda: cls.check(
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
                global_until,
            )
        )

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
        global_until=D.AUDIT_GLOBAL_UNTIL,
    ) -> io.NodeOutput:
        check_widgets(
            cls, {k: v for k, v in locals().items() if k != "cls"}, required=True
        )  # every widget, before any work
        scales = cls.check(
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
        )
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
        schedule = audit_schedule(audit_every, audit_first, skip_last, scales, global_until)
        return io.NodeOutput(GuardSpec(guard, schedule, alpha))
