"""The report ("microscope"): a static site of a network's figures and analyses, built from saved results.

``build_report([demo_folder_or_results...], out)`` writes ``out/index.html`` and the pages beside it; see
:mod:`zfnet.report.html`. This package is the only place that writes report files.
"""

from .html import build_report

__all__ = ["build_report"]
