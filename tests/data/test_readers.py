"""Image readers: NIfTI, NRRD, DICOM series (built with pydicom), masks and geometry."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from bayesrad.data.readers import check_geometry, image_to_array, read_geometry, read_image, read_mask, resample_to
from bayesrad.errors import ImageError, ImageGeometryError, MissingFileError


def write_dicom_series(directory, volume, spacing=(0.8, 0.8, 2.5), origin=(-100.0, -80.0, 30.0)):
    """A minimal but standard CT series: one file per slice, HU through rescale slope/intercept."""
    directory.mkdir(parents=True, exist_ok=True)
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    for k, slice_hu in enumerate(volume):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(directory / f"slice{k:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "CT"
        ds.PatientID = "DCM001"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[2]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing[1], spacing[0]]
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = slice_hu.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (slice_hu + 1024).astype(np.int16).tobytes()
        ds.save_as(directory / f"slice{k:03d}.dcm", enforce_file_format=True)


def test_dicom_series_reads_with_geometry_and_hu(tmp_path):
    volume = np.random.default_rng(0).integers(-1000, 1000, (5, 12, 10)).astype(np.int16)
    write_dicom_series(tmp_path / "ct", volume)
    image = read_image(tmp_path / "ct")
    assert image.GetSize() == (10, 12, 5)
    assert np.allclose(image.GetSpacing(), (0.8, 0.8, 2.5))
    assert np.allclose(image.GetOrigin(), (-100.0, -80.0, 30.0))
    np.testing.assert_array_equal(image_to_array(image, np.int16), volume)


def test_two_series_in_one_directory_refused(tmp_path):
    write_dicom_series(tmp_path / "ct", np.zeros((2, 4, 4), np.int16))
    other = tmp_path / "other"
    write_dicom_series(other, np.zeros((2, 4, 4), np.int16))
    for f in other.iterdir():
        f.rename(tmp_path / "ct" / ("b" + f.name))
    with pytest.raises(ImageError, match="2 DICOM series"):
        read_image(tmp_path / "ct")


def test_nrrd_and_nifti_read(shared_data):
    image = read_image(shared_data / "radiomics_reference/pyradiomics/data/brain1_image.nrrd")
    assert image.GetSize() == (256, 256, 25)
    geometry = read_geometry(shared_data / "radiomics_reference/pyradiomics/data/brain1_label.nrrd")
    check_geometry(image, geometry)
    ct = read_image(shared_data / "images/totalsegmentator/example_ct_sm.nii.gz")
    assert ct.GetDimension() == 3


def test_mask_errors(tmp_path):
    ref = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.float32))
    empty = tmp_path / "empty.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.uint8)), str(empty))
    with pytest.raises(ImageError, match=r"patient 'P1'.*mask is empty"):
        read_mask(empty, ref, patient_id="P1")
    labelled = np.zeros((4, 5, 6), np.uint8)
    labelled[1, 1, 1] = 2
    lab = tmp_path / "lab.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(labelled), str(lab))
    with pytest.raises(ImageError, match=r"label\(s\) \[1\] absent.*present: \[2\]"):
        read_mask(lab, ref, labels="1", patient_id="P1")
    assert read_mask(lab, ref, labels="2").GetSize() == (6, 5, 4)
    shifted = sitk.GetImageFromArray(labelled)
    shifted.SetOrigin((0.0, 0.0, 5.0))
    with pytest.raises(ImageGeometryError, match="origin"):
        check_geometry(ref, shifted, patient_id="P1")
    with pytest.raises(MissingFileError):
        read_mask(tmp_path / "absent.nii.gz")
    bad = tmp_path / "garbage.nii.gz"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageError, match="could not be read"):
        read_image(bad, patient_id="P1")


def test_resample_mask_onto_image_grid():
    mask = sitk.GetImageFromArray(np.ones((4, 4, 4), np.uint8))
    mask.SetSpacing((2.0, 2.0, 2.0))
    ref = sitk.GetImageFromArray(np.zeros((8, 8, 8), np.float32))
    out = resample_to(mask, ref, "nearest")
    check_geometry(ref, out)
    assert sitk.GetArrayFromImage(out).sum() == 7 ** 3  # voxel centres 0..6 mm fall inside


def test_nan_voxels_in_nifti_are_refused_not_zeroed(tmp_path):
    volume = np.zeros((4, 4, 4), np.float32)
    volume[1, 2, 3] = np.nan
    path = tmp_path / "pet.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(path))
    with pytest.raises(ImageError, match=r"patient 'P9'.*1 NaN voxel"):
        read_image(path, patient_id="P9")
