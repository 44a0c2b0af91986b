"""The every-model figure: each model's prediction outline must stay visible on its heat map."""

import matplotlib.colors
import matplotlib.image
import numpy as np
import pytest

from brainseg_jax import figures

MODELS = ["threshold", "unet_dae"]


def _rows(predict: bool) -> list[dict]:
  """Two volumes, each with a lesion the maps are brightest on and the predictions follow."""
  y, x = np.mgrid[:64, :64]
  brain = ((x - 32) / 26) ** 2 + ((y - 32) / 30) ** 2 < 1
  rows = []
  for i, (cx, cy, r) in enumerate([(22, 36, 9), (44, 26, 6)]):
    truth = ((x - cx) ** 2 + (y - cy) ** 2 < r ** 2) & brain
    # A prediction a little larger than the lesion: both outlines side by side.
    flagged = ((x - cx) ** 2 + (y - cy) ** 2 < (r + 2) ** 2) & brain
    row = {"title": f"volume {i}", "image": brain * 0.5 + truth * 0.6, "truth": truth}
    for m in MODELS:
      # Every colour of the heat map over the brain (a ramp from 0 to 2x the threshold, the top
      # of its scale), and its lightest on the lesion, where a red outline vanished.
      row[m] = {"anomaly_map": brain * x / 64 * 0.6 + truth * 5.0, "threshold": 0.3,
                "prediction": flagged if predict else np.zeros_like(flagged)}
    rows.append(row)
  return rows


def _pixels_of(image: np.ndarray, colour: str, distance: float = 0.25) -> np.ndarray:
  """Pixels within `distance` (RGB in [0, 1]) of `colour`: antialiasing blends outline edges."""
  target = np.asarray(matplotlib.colors.to_rgb(colour))
  return np.linalg.norm(image[..., :3] - target, axis=-1) < distance


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[bool, np.ndarray]:
  images = {}
  for predict in (True, False):
    path = tmp_path_factory.mktemp("figures") / f"comparison_{predict}.png"
    figures.save_model_comparison(str(path), _rows(predict), MODELS)
    images[predict] = matplotlib.image.imread(path)
  return images


def test_prediction_colour_is_absent_from_the_heat_map():
  heat = matplotlib.colormaps[figures.HEAT_CMAP](np.linspace(0, 1, 256))[:, :3]
  for colour in (figures.PREDICTION_COLOUR, figures.TRUTH_COLOUR):
    distance = np.linalg.norm(heat - matplotlib.colors.to_rgb(colour), axis=-1)
    assert distance.min() > 0.5, colour
  assert (matplotlib.colors.to_rgb(figures.PREDICTION_COLOUR)
          != matplotlib.colors.to_rgb(figures.TRUTH_COLOUR))


def test_prediction_outline_is_drawn_on_the_heat_maps(rendered):
  with_prediction, without = rendered[True], rendered[False]
  height, width = with_prediction.shape[:2]
  panels = with_prediction[int(0.06 * height):]  # below the legend
  # The input column (the left 1 / (models + 1) of the width) carries no prediction.
  input_column = width // (len(MODELS) + 1)
  outline = _pixels_of(panels, figures.PREDICTION_COLOUR)
  assert outline[:, input_column:].sum() > 200, outline.sum()
  assert outline[:, :input_column].sum() == 0
  # Nothing else in the panels comes near the outline's colour: without predictions no pixel
  # is within twice the distance counted above (a red outline on this heat map fails here).
  assert _pixels_of(without[int(0.06 * height):], figures.PREDICTION_COLOUR, 0.5).sum() == 0
  # The legend shows a sample of both colours.
  legend = with_prediction[:int(0.06 * height)]
  assert _pixels_of(legend, figures.PREDICTION_COLOUR).sum() > 10
  assert _pixels_of(legend, figures.TRUTH_COLOUR).sum() > 10


def test_truth_outline_stays_beside_the_prediction(rendered):
  height = rendered[True].shape[0]
  for image in rendered.values():
    assert _pixels_of(image[int(0.06 * height):], figures.TRUTH_COLOUR).sum() > 200
