#!/usr/bin/env bash
# Install what the bridge's demo and tests need from Debian, if missing:
# Orthanc + its DICOMweb plugin (hospital PACS and reading archive), dcmtk (storescu & co),
# the SR validators dicom3tools and PixelMed, Tesseract (burned-in text), Chromium (console tests),
# poppler-utils (the tests read the report PDFs' text and look at them as pictures).
set -euo pipefail

need=()
[ -x /usr/sbin/Orthanc ] || need+=(orthanc)
ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so >/dev/null 2>&1 || need+=(orthanc-dicomweb)
command -v storescu >/dev/null 2>&1 && command -v dcmconv >/dev/null 2>&1 || need+=(dcmtk)
# SR validators used by the tests: dicom3tools (dciodvfy) and PixelMed (DicomSRValidator).
command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)
[ -f /usr/share/java/pixelmed.jar ] || need+=(libpixelmed-java)
command -v java >/dev/null 2>&1 || need+=(default-jre-headless)
# Burned-in text detection: the Tesseract OCR engine and its English model.
command -v tesseract >/dev/null 2>&1 || need+=(tesseract-ocr)
[ -f /usr/share/tesseract-ocr/5/tessdata/eng.traineddata ] || need+=(tesseract-ocr-eng)
# The web console's browser tests drive Debian's Chromium (headless) with Playwright.
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v pdftoppm >/dev/null 2>&1 && command -v pdftotext >/dev/null 2>&1 || need+=(poppler-utils)

if [ ${#need[@]} -eq 0 ]; then
  echo "system packages: orthanc, orthanc-dicomweb, dcmtk, dicom3tools, pixelmed, tesseract, chromium, poppler present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to install: ${need[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "installing from Debian: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# The package's own system service is not used (fixtures and the demo start their own Orthancs
# on other ports); policy-rc.d may refuse to start it, which is fine.
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
