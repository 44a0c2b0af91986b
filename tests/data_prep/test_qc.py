"""Registration QC: a real scan registered right passes; the same scan registered wrong fails."""

import numpy as np
import pytest

from data_prep import pipeline, qc, register
from data_prep.config import PrepConfig


def test_each_measure_has_its_own_reason():
  good = qc.RegistrationQC(volume_scale=0.8, brain_in_background=0.01, brain_coverage=1.0)
  assert good.flag_reasons() == []
  assert "volume scale 1.40" in qc.RegistrationQC(1.4, 0.01, 1.0).flag_reasons()[0]
  assert "12.0% of the template brain" in qc.RegistrationQC(0.8, 0.12, 1.0).flag_reasons()[0]
  assert "covers 30%" in qc.RegistrationQC(0.8, 0.01, 0.3).flag_reasons()[0]


@pytest.fixture(scope="module")
def ixi_scan(sample_data_dir):
  return sample_data_dir / "ixi_t1" / "t1" / "IXI079-HH-1388_T1.nii.gz"


@pytest.mark.parametrize("shift_mm", [(0, 0, 30), (0, 35, 0)])
def test_a_shifted_registration_is_flagged(ixi_scan, monkeypatch, shift_mm):
  """The scan's own registration, moved up or forward: the brain lands partly in air."""
  right = pipeline.preprocess(ixi_scan, PrepConfig(resolution=32))
  assert right.qc is not None and right.qc.flag_reasons() == [], right.qc
  real_registration = register.register_affine

  def shifted(*args, **kwargs):
    move = np.eye(4)
    move[:3, 3] = shift_mm
    return move @ real_registration(*args, **kwargs)

  monkeypatch.setattr(register, "register_affine", shifted)
  wrong = pipeline.preprocess(ixi_scan, PrepConfig(resolution=32))
  assert wrong.qc.brain_in_background > 3 * right.qc.brain_in_background
  assert any("lands on background" in r for r in wrong.qc.flag_reasons()), wrong.qc
