"""ShapesWorld evaluation: plain sampling vs best-of-N vs the TiPAI loop, scored by the checker.

For each held-out (prompt, seed) (``worlds.shapes.evaluate.held_out``):

1. ``plain``: ``sampler.sample`` from the seed's noise, n_steps steps;
2. ``best-of-N``: N whole images (seeds ``seed + j·100003``), the auditor's S picks one; N is the
   smallest whole number with ``N·n_steps ≥`` TiPAI's mean denoiser calls per image (≥ 2), so
   best-of-N gets equal or greater compute;
3. ``tipai``: ``loop.sample_with_audits`` from the same noise, with an ``AuditSuite`` of the pixel
   decoder (factor 1), a ``SaliencyMiner``, the auditor, ``DiffusionEditor``, a
   ``FixedKnobPolicy`` and a ``TournamentGuard``;
4. ``tipai[learned+cal]`` and ``tipai[learned+tspo+cal]``: the same loop with the guard's δ and τ_F(t)
   from Stage C, and (the second) the candidate policy learned by offline TSPO. Both are fitted on
   tournaments of a separate calibration set (``evaluate.calibration_set``): the loop with the fixed
   knob distribution and δ = 0 runs on it, the checker labels every candidate (``true_win``: more
   clauses satisfied than the control; the checker plays the "stronger judge" Stage C asks for), then
   Stage C (``train.calibrate.fit_calibration``) and offline TSPO (``train.tspo.train_offline``), what
   ``python -m tipai_core.train calibrate`` and ``tspo offline`` run, fit on that log exactly as a user
   fits them on ComfyUI logs. Cached under ``<cache>/shapes/stagec-<key>/``.

Reported per method: checker accuracy per clause type and for whole prompts, denoiser calls per
image (one call of D on a batch; CFG inside) and evaluations per image (batch rows: N candidates
in one call count N; best-of-N's N is chosen from these), wall time per image, the guard's accept rate
(accepted tournaments / tournaments), and the non-regression fraction: over all prompts, the
share of images where the guard accepted an edit and the checker's count of satisfied clauses
fell below the plain image's (the plain run is the loop's control trajectory).

Every draw is seeded, so a second run prints the same table.

Modules: ``settings`` (the settings, a method's result, a TiPAI row's pieces, the AuditSuite built from
them), ``runs`` (plain, best-of-N and the loop over the held-out items), ``stage_c`` (Stage C and offline
TSPO fitted on the calibration set), ``diagnose`` (which piece limits the loop), ``table`` (the comparison
table and the evaluation that fills it), ``cli`` (``python -m tipai_core.eval shapes``).
"""
