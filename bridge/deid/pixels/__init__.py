"""Burned-in text: assess the risk, find text in the pixels, mask it (or hold the instance).

risk.py     what the header says about burned-in identity (SOP class, modality, flags)
frames.py   decode pixel data into frames, make an 8-bit view a detector can read, write back
detect.py   where the text is: a neural text detector (PP-OCRv4 DB, ONNX on the CPU) and
            Tesseract's own layout analysis; aligned text blocks are completed
ocr.py      Tesseract: read the regions found (and the word finder of the tesseract detector)
clean.py    the policy per modality (mask / hold / pass) and the masking itself
"""
