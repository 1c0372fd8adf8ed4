"""Synthetic CT studies with identities planted in many places (header, sequences, private tags).

Used by the demo and the tests: every planted value is distinctive, so a test can search a
de-identified object for each of them. Nothing here describes a real person.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

UID_PREFIX = "1.2.826.0.1.3680043.8.498."


@dataclass(frozen=True)
class PlantedPatient:
    family: str = "PLANTEDFAMILY"
    given: str = "PLANTEDGIVEN"
    patient_id: str = "PID-7734521"
    issuer: str = "PLANTED-ISSUER-HOSP"
    birth_date: str = "19610417"


@dataclass
class SampleStudy:
    study_uid: str
    paths: list[Path]
    sop_uids: list[str]
    series_uids: list[str]
    #: Every planted identifying value (strings), for leak checks.
    planted: list[str] = field(default_factory=list)
    #: The planted question (with identity inside), as the PACS would send it.
    question: str = ""

    @property
    def identity(self) -> list[str]:
        """The planted values no profile may let through (the "reading" profile keeps the time of
        day and a cleaned occupation: neither identifies)."""
        return [p for p in self.planted if p not in ("101502", "PL-OCCUPATION")]


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def make_study(
    out_dir: Path,
    n_instances: int = 10,
    *,
    patient: PlantedPatient | None = None,
    n_series: int = 2,
    rows: int = 512,
    columns: int = 512,
    seed: int | None = None,
    accession: str = "ACC-PLANT-55123",
    study_date: str = "20240311",
) -> SampleStudy:
    """Write ``n_instances`` CT files (16-bit, ``rows`` x ``columns``) into ``out_dir``."""
    patient = patient or PlantedPatient()
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    study_uid = generate_uid(UID_PREFIX)
    series_uids = [str(generate_uid(UID_PREFIX)) for _ in range(n_series)]
    frame_uid = generate_uid(UID_PREFIX)
    ref_study_uid = generate_uid(UID_PREFIX)
    ref_patient_uid = generate_uid(UID_PREFIX)
    pps_uid = generate_uid(UID_PREFIX)
    question = f"R/O glioma {patient.family} {patient.given} 04/17/1961 {patient.patient_id}"
    planted = [
        patient.family,
        patient.given,
        patient.patient_id,
        patient.issuer,
        patient.birth_date,
        "OTHERPID-99812",
        "PLANTEDALIAS",
        "MOTHERPLANTED",
        "Plantedstreet",
        "555-0199-321",
        accession,
        "STUDYID-PL-88",
        "REFPHYS",
        "PERFPHYS",
        "READPHYS",
        "OPERATORPL",
        "Planted General Hospital",
        "Planted Plaza",
        "PLANTSTATION7",
        "Planted Radiology",
        "REQPROC-PL-3",
        "SPS-PL-4",
        "PRIVATE-PLANTED-VALUE",
        "PLANTED VENDOR",
        study_date,
        "101502",
        "PL-OCCUPATION",
        "history PLANTED",
        "PLANTED DIAGNOSIS",
        "SN-PLANTED-4411",
        "REQPHYS",
        "PPS-PL-77",
        "MRL-PLANTED",
        "PLANTED COMMENT",
        "PLANTEDAE",
        "PLANTED-RANK",
        "PLANTED PROC",
        "04/17/1961",
        study_uid,
        frame_uid,
        ref_study_uid,
        ref_patient_uid,
        pps_uid,
        *series_uids,
    ]
    study = SampleStudy(
        study_uid=study_uid,
        paths=[],
        sop_uids=[],
        series_uids=series_uids,
        planted=planted,
        question=question,
    )
    pixel_len = rows * columns * 2
    pixels = rng.randbytes(pixel_len)
    for i in range(n_instances):
        sop_uid = generate_uid(UID_PREFIX)
        series_uid = series_uids[i % n_series]
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study_date
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "101502"
        ds.AccessionNumber = accession
        ds.Modality = "CT"
        ds.Manufacturer = "ACME Imaging"
        ds.InstitutionName = "Planted General Hospital"
        ds.InstitutionAddress = "1 Planted Plaza, Metropolis"
        ds.ReferringPhysicianName = "REFPHYS^ALICE"
        ds.StationName = "PLANTSTATION7"
        ds.StudyDescription = f"CT HEAD for {patient.family}"
        ds.SeriesDescription = f"AX {patient.given} 5mm"
        ds.InstitutionalDepartmentName = "Planted Radiology Dept"
        ds.PerformingPhysicianName = "PERFPHYS^BOB"
        ds.NameOfPhysiciansReadingStudy = "READPHYS^CAROL"
        ds.OperatorsName = "OPERATORPL^DAVE"
        ds.ProcedureCodeSequence = Sequence([_code("CTHEAD", "99LOCAL", "CT HEAD WO CONTRAST")])
        ds.ProcedureCodeSequence[0].add_new(0x00290010, "LO", "PLANTED VENDOR")
        ds.ProcedureCodeSequence[0].add_new(0x00291001, "LO", "PLANTED PROC")
        ds.ReferencedStudySequence = Sequence([Dataset()])
        ds.ReferencedStudySequence[0].ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
        ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID = ref_study_uid
        ds.ReferencedPatientSequence = Sequence([Dataset()])
        ds.ReferencedPatientSequence[0].ReferencedSOPClassUID = "1.2.840.10008.3.1.2.1.1"
        ds.ReferencedPatientSequence[0].ReferencedSOPInstanceUID = ref_patient_uid
        ds.ReferencedPerformedProcedureStepSequence = Sequence([Dataset()])
        ds.ReferencedPerformedProcedureStepSequence[
            0
        ].ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.3"
        ds.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID = pps_uid
        ds.PatientName = f"{patient.family}^{patient.given}"
        ds.PatientID = patient.patient_id
        ds.IssuerOfPatientID = patient.issuer
        ds.PatientBirthDate = patient.birth_date
        ds.PatientSex = "F"
        ds.PatientAge = "062Y"
        ds.PatientWeight = "71.5"
        ds.OtherPatientIDsSequence = Sequence([Dataset()])
        ds.OtherPatientIDsSequence[0].PatientID = "OTHERPID-99812"
        ds.OtherPatientIDsSequence[0].IssuerOfPatientID = "PLANTED-ISSUER-2"
        ds.OtherPatientIDsSequence[0].TypeOfPatientID = "TEXT"
        ds.OtherPatientNames = "PLANTEDALIAS^OTHER"
        ds.PatientMotherBirthName = "MOTHERPLANTED^MAIDEN"
        ds.PatientAddress = "17 Plantedstreet Road, Springfield"
        ds.PatientTelephoneNumbers = "555-0199-321"
        ds.MilitaryRank = "PLANTED-RANK"
        ds.Occupation = "PL-OCCUPATION"
        ds.AdditionalPatientHistory = "history PLANTED"
        ds.AdmittingDiagnosesDescription = "PLANTED DIAGNOSIS"
        ds.MedicalRecordLocator = "MRL-PLANTED"
        ds.PatientComments = "PLANTED COMMENT"
        ds.SliceThickness = "5.0"
        ds.KVP = "120"
        ds.DeviceSerialNumber = "SN-PLANTED-4411"
        ds.BodyPartExamined = "HEAD"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "STUDYID-PL-88"
        ds.SeriesNumber = series_uids.index(series_uid) + 1
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0, 0, float(i * 5)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.ImageComments = f"Patient {patient.given} {patient.family} called back"
        ds.RequestingPhysician = "REQPHYS^EVE"
        ds.RequestedProcedureDescription = "MRI brain with contrast"
        ds.RequestAttributesSequence = Sequence([Dataset()])
        ra = ds.RequestAttributesSequence[0]
        ra.RequestedProcedureID = "REQPROC-PL-3"
        ra.ScheduledProcedureStepID = "SPS-PL-4"
        ra.ReasonForTheRequestedProcedure = question
        ds.PerformedProcedureStepID = "PPS-PL-77"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = columns
        ds.PixelSpacing = [0.5, 0.5]
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.add_new(0x00190010, "LO", "PLANTED VENDOR")
        ds.add_new(0x00191001, "LO", "PRIVATE-PLANTED-VALUE")
        ds.PixelData = pixels[i % 7 :] + pixels[: i % 7]
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = UID(UID_PREFIX + "1")
        meta.SourceApplicationEntityTitle = "PLANTEDAE"
        ds.file_meta = meta
        path = out_dir / f"CT{i + 1:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        study.paths.append(path)
        study.sop_uids.append(sop_uid)
    return study


def make_burned_in(
    path: Path,
    lines: list[str],
    *,
    modality: str = "US",
    rows: int = 480,
    columns: int = 640,
    origin: tuple[int, int] = (24, 20),
    font_size: int = 18,
    patient: PlantedPatient | None = None,
    burned_in_annotation: str | None = None,
    seed: int = 3,
) -> list[tuple[int, int, int, int]]:
    """Write an 8-bit greyscale image with ``lines`` of text burned into its pixels over a
    speckled, ultrasound-like background; return each line's box (x0, y0, x1, y1)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    patient = patient or PlantedPatient()
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:columns]
    fan = np.exp(-(((xx - columns / 2) / (columns / 3)) ** 2 + ((yy - rows) / rows) ** 2))
    pixels = np.clip(fan * 140 + rng.normal(0, 25, (rows, columns)), 0, 235).astype(np.uint8)
    img = Image.fromarray(pixels)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=font_size)
    boxes = []
    x, y = origin
    for text in lines:
        box = draw.textbbox((x, y), text, font=font)
        draw.text((x, y), text, fill=255, font=font)
        boxes.append((int(box[0]), int(box[1]), int(box[2]), int(box[3])))
        y += int(font_size * 1.5)
    ds = Dataset()
    us, sc = "1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPClassUID = us if modality == "US" else sc
    ds.SOPInstanceUID = generate_uid(UID_PREFIX)
    ds.StudyInstanceUID = generate_uid(UID_PREFIX)
    ds.SeriesInstanceUID = generate_uid(UID_PREFIX)
    ds.Modality = modality
    ds.PatientName = f"{patient.family}^{patient.given}"
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.StudyDate = "20240311"
    ds.AccessionNumber = "ACC-BURNED-1"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.asarray(img).tobytes()
    if burned_in_annotation:
        ds.BurnedInAnnotation = burned_in_annotation
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return boxes


def make_large_instance(
    path: Path, mib: int, patient_name: str = "LARGE^OBJECT", patient_id: str = "LARGE-1"
) -> str:
    """An Enhanced CT instance with ``mib`` MiB of random pixel data (512 x 512 x 16-bit
    frames), written without holding it in memory; returns its Study Instance UID."""
    frames = mib * 1024 * 1024 // (512 * 512 * 2)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.2.1")  # Enhanced CT
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(UID_PREFIX)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(UID_PREFIX)
    ds.SeriesInstanceUID = generate_uid(UID_PREFIX)
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.Modality = "CT"
    ds.StudyDate = "20240101"
    ds.Rows = ds.Columns = 512
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.save_as(path, enforce_file_format=True)
    size = frames * 512 * 512 * 2
    chunk = os.urandom(1 << 20)
    with path.open("ab") as fh:
        fh.write(b"\xe0\x7f\x10\x00OW\x00\x00" + size.to_bytes(4, "little"))
        left = size
        while left:
            n = min(left, len(chunk))
            fh.write(chunk[:n])
            left -= n
    return str(ds.StudyInstanceUID)
