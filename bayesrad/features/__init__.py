"""Feature extraction: radiomics (pyradiomics), dosimetry, PET kinetics and habitats, gene
modules (scanpy) and ComBat harmonisation. Each extractor returns a DataFrame block indexed by
``patient_id``; ``bayesrad.features.extract`` runs them over a cohort.

Submodules are imported on use (``from bayesrad.features.dosimetry import extract_dosimetry``)
so that importing bayesrad does not pull in pyradiomics or scanpy.
"""
