"""Burned-in text: assess the risk, find text in the pixels, mask it (or hold the instance).

risk.py     what the header says about burned-in identity (SOP class, modality, flags)
frames.py   decode pixel data into frames, make an 8-bit view a detector can read, write back
detect.py   where the text is: the first look per frame (pre-filter), a neural text detector
            (PP-OCRv4 DB, ONNX on the CPU, its model in models/ with its NOTICE) and
            Tesseract's own layout analysis; aligned text blocks are completed
regions.py  from detector boxes to regions to mask: shape, OCR confirmation, line ends, margins
ocr.py      Tesseract in the process: confirm regions, read the masked ones, find the header's
            identity anywhere in a frame
clean.py    the policy per modality (mask / hold / pass) and the masking itself
score.py    how much of a corpus's ground-truth text was masked (two measures)
"""
