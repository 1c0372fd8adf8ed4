"""One client per remote system the bridge talks to: the hospital PACS (DICOMweb or DIMSE), the
reading archive, HTTP session setup (TLS, authentication) and multipart bodies. A peer's failure
is an error of the domain's tree: transient (worth a retry) or permanent (the peer refused)."""
