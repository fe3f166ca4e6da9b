"""Judging generated pairs without ground truth: the type classifier, the measures of generated
data (type fidelity, mask agreement, anomaly evidence, area and position) and quality control.

Layer 4 (docs/ARCHITECTURE.md): generation's quality control and evaluation both use it.
"""
