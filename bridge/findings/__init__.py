"""Where findings come back: intake, SR building, re-identification, return to the PACS."""
