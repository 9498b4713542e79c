"""Overlays: exact pixels of boxes (view -> image mapping) and of tinted masks."""

from __future__ import annotations

import pytest
import torch

from tipai_core.mining.regions import Region
from tipai_core.policy.actions import Action, PolicyState
from tipai_core.records.costs import Costs
from tipai_core.records.overlay import draw_overlay, mask_overlay, palette
from tipai_core.records.tournament_record import TournamentRecord

GREEN, ORANGE = torch.tensor([0.0, 1.0, 0.0]), torch.tensor([1.0, 0.6, 0.0])
STATE = PolicyState(
    step=2, n_steps=10, t=0.2, sigma=1.0, region_area=0.1, region_score=1.0, audit_scale=0.5, max_depth=2
)


def _record(bbox, view_factor=4, accepted=True, batch_index=0):
    return TournamentRecord(
        step=2,
        n_steps=10,
        t=0.2,
        sigma=1.0,
        region={
            "index": 0,
            "bbox": list(bbox),
            "area": 1,
            "latent_bbox": [0, 0, 1, 1],
            "score": 1.0,
            "audit_scale": view_factor / 8,
            "view_factor": view_factor,
        },
        state=STATE.to_dict(),
        actions=[Action(seed=0, depth=1).to_dict()],
        log_probs=[0.0],
        policy_seed=0,
        seeds=[0],
        scores={
            "S": [0.0, 1.0],
            "S_R": [0.0, 0.0],
            "F": [1.0, 1.0],
            "P": [[1.0], [1.0]],
            "B": [1.0, 1.0],
            "classes": ["x"],
        },
        utilities=[0.0, 1.0 if accepted else 0.0],
        winner=1 if accepted else 0,
        accepted=accepted,
        guard={"delta": 0.0, "tau_P": [0.0], "tau_F": 0.0},
        alpha=1.0,
        costs=Costs(),
        batch_index=batch_index,
    )


def _border(h, w, box, t=1):
    """Hand-made border mask of an end-exclusive box, t pixels inside it."""
    y0, x0, y1, x1 = box
    m = torch.zeros(h, w, dtype=torch.bool)
    for y in range(y0, y1):
        for x in range(x0, x1):
            if y < y0 + t or y >= y1 - t or x < x0 + t or x >= x1 - t:
                m[y, x] = True
    return m


def _image(b=None, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (3, h, w) if b is None else (b, 3, h, w)
    return torch.rand(shape, generator=g) * 0.5  # never equal to a box colour by chance


def _check_box(out, img, box, color, t=1):
    border = _border(out.shape[-2], out.shape[-1], box, t)
    assert torch.equal(out[:, border], color.view(3, 1).expand(3, int(border.sum())))
    assert torch.equal(out[:, ~border], img[:, ~border])


def test_record_box_is_mapped_from_view_to_image_pixels():
    # latent 4x4, factor 8 -> image 32x32; view_factor 4 -> view 16x16; view box [2,3,6,9] -> image [4,6,12,18]
    img = _image()
    before = img.clone()
    out = draw_overlay(img, [_record((2, 3, 6, 9))])
    assert out.shape == img.shape and out.dtype == img.dtype
    _check_box(out, img, (4, 6, 12, 18), GREEN)
    assert torch.equal(img, before)  # the input is not written to


def test_rejected_is_orange_and_thickness_is_inside_the_box():
    img = _image()
    out = draw_overlay(img, [_record((2, 3, 6, 9), accepted=False)], thickness=2)
    _check_box(out, img, (4, 6, 12, 18), ORANGE, t=2)


def test_accepted_box_is_drawn_over_a_rejected_one():
    img = _image()
    # the accepted record comes first in the list but must end up on top
    out = draw_overlay(img, [_record((2, 2, 6, 6)), _record((2, 2, 6, 8), accepted=False)])
    assert torch.equal(out[:, 4, 4], GREEN) and torch.equal(out[:, 11, 4], GREEN)  # shared top-left corner
    assert torch.equal(out[:, 4, 15], ORANGE)  # right end of the rejected box only


def test_latent_size_and_non_integer_scales():
    # the image was resized to 48x48 for a 4x4 latent: s = 48 / (4·4) = 3
    img = _image(h=48, w=48)
    _check_box(draw_overlay(img, [_record((1, 2, 3, 5))], latent_size=(4, 4)), img, (3, 6, 9, 15), GREEN)
    # factor 8 with view_factor 3: s = 8/3; [1,1,2,2] -> [floor 8/3, floor 8/3, ceil 16/3, ceil 16/3] = [2,2,6,6]
    img = _image()
    _check_box(draw_overlay(img, [_record((1, 1, 2, 2), view_factor=3)]), img, (2, 2, 6, 6), GREEN)


def test_box_is_clipped_at_the_image_edge():
    img = _image()
    out = draw_overlay(img, [_record((12, 12, 20, 20))])  # image box [24,24,40,40] -> [24,24,32,32]
    _check_box(out, img, (24, 24, 32, 32), GREEN)


def test_batch_index_selects_the_image():
    img = _image(b=2)
    out = draw_overlay(img, [_record((2, 3, 6, 9), batch_index=1)])
    assert torch.equal(out[0], img[0])
    _check_box(out[1], img[1], (4, 6, 12, 18), GREEN)
    with pytest.raises(ValueError, match="batch_index 2"):
        draw_overlay(img, [_record((2, 3, 6, 9), batch_index=2)])


def test_record_dicts_and_report_region_entries_draw_the_same():
    img = _image()
    rec = _record((2, 3, 6, 9), accepted=False)
    ref = draw_overlay(img, [rec])
    assert torch.equal(draw_overlay(img, [rec.to_dict()]), ref)
    entry = {"bbox": [2, 3, 6, 9], "view_factor": 4, "accepted": False, "batch_index": 0}  # report steps format
    assert torch.equal(draw_overlay(img, [entry]), ref)


def test_miner_region_gets_box_and_tinted_mask_at_its_own_scale():
    img = _image()
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:8, 2:10] = 1  # a region found on a 16x16 view: scale 2 to the image
    region = Region.from_mask(mask)
    blue = torch.tensor([0.0, 0.6, 1.0])
    out = draw_overlay(img, [region], mask_alpha=0.5)
    box = (8, 4, 16, 20)
    border = _border(32, 32, box)
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[8:16, 4:20] = True
    assert torch.equal(out[:, border], blue.view(3, 1).expand(3, int(border.sum())))
    interior = inside & ~border
    expected = 0.5 * img + 0.5 * blue.view(3, 1, 1)
    torch.testing.assert_close(out[:, interior], expected[:, interior], rtol=0, atol=1e-7)
    assert torch.equal(out[:, ~inside], img[:, ~inside])


def test_draw_overlay_rejects_bad_input():
    with pytest.raises(ValueError, match="image"):
        draw_overlay(torch.zeros(4, 8, 8), [])
    with pytest.raises(ValueError, match="thickness"):
        draw_overlay(torch.zeros(3, 8, 8), [], thickness=0)
    with pytest.raises(ValueError, match="cannot draw"):
        draw_overlay(torch.zeros(3, 8, 8), [(0, 0, 1, 1)])
    with pytest.raises(ValueError, match="accepted_color"):
        draw_overlay(torch.zeros(3, 8, 8), [], accepted_color=(0, 2, 0))
    assert torch.equal(draw_overlay(torch.full((3, 8, 8), 0.25), []), torch.full((3, 8, 8), 0.25))


def test_mask_overlay_tints_each_mask_with_its_colour():
    img = _image(b=2, h=8, w=8)
    masks = torch.zeros(2, 1, 8, 8)
    masks[0, 0, 0:4, 0:4] = 1.0
    masks[1, 0, 2:6, 2:6] = 0.5  # soft, and overlapping mask 0 on [2:4, 2:4]
    cols = [(1.0, 0.0, 0.0), (0.0, 0.0, 1.0)]
    a = 0.4
    out = mask_overlay(img, masks, cols, alpha=a)
    c0, c1 = torch.tensor(cols[0]).view(1, 3, 1, 1), torch.tensor(cols[1]).view(1, 3, 1, 1)
    m0, m1 = a * masks[0:1], a * masks[1:2]
    step1 = torch.where(m0 > 0, (1 - m0) * img + m0 * c0, img)
    expected = torch.where(m1 > 0, (1 - m1) * step1 + m1 * c1, step1)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    outside = masks.sum(0)[0] == 0
    assert torch.equal(out[:, :, outside], img[:, :, outside])
    # a closed-form pixel: only mask 0, full weight -> 0.6·I + 0.4·red
    torch.testing.assert_close(out[0, :, 0, 0], 0.6 * img[0, :, 0, 0] + 0.4 * torch.tensor(cols[0]))


def test_mask_overlay_defaults_shapes_and_errors():
    img = _image(h=8, w=8)
    masks = torch.zeros(3, 1, 4, 4)
    masks[0, 0, 0, 0] = masks[1, 0, 1, 1] = masks[2, 0, 3, 3] = 1.0
    out = mask_overlay(img, masks)  # unbatched, masks resized to 8x8, default palette
    assert out.shape == (3, 8, 8)
    assert not torch.equal(out[:, 0, 0], img[:, 0, 0]) and torch.equal(out[:, 4, 0], img[:, 4, 0])
    cols = palette(6)
    assert len(set(cols)) == 6 and all(0 <= v <= 1 for c in cols for v in c)
    with pytest.raises(ValueError, match="2 colours for 3 masks"):
        mask_overlay(img, masks, [(1, 0, 0), (0, 1, 0)])
    with pytest.raises(ValueError, match="alpha"):
        mask_overlay(img, masks, alpha=1.5)
    with pytest.raises(ValueError, match="masks"):
        mask_overlay(img, torch.zeros(3, 2, 8, 8))


def test_outline_is_a_black_band_on_both_sides_of_the_border():
    img = _image()
    out = draw_overlay(img, [_record((2, 3, 6, 9))], thickness=2, outline=1)
    box = (4, 6, 12, 18)
    colour = _border(32, 32, box, t=2)
    grown = _border(32, 32, (3, 5, 13, 19), t=4)  # the box grown by 1, a band of 2 + 2·1
    dark = grown & ~colour
    assert torch.equal(out[:, colour], GREEN.view(3, 1).expand(3, int(colour.sum())))
    assert torch.equal(out[:, dark], torch.zeros(3, int(dark.sum())))
    assert torch.equal(out[:, ~grown], img[:, ~grown])  # nothing else is touched


@pytest.mark.parametrize(("size", "style"), [((64, 64), (1, 1)), ((512, 768), (5, 2)), ((1024, 1024), (10, 5))])
def test_readable_style_grows_with_the_short_side(size, style):
    from tipai_core.records.overlay import readable_style

    assert readable_style(*size) == {"thickness": style[0], "outline": style[1]}
