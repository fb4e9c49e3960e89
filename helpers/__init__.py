"""Shared code for the book *Differentiable Volumetric Rendering*, one module per chapter topic.

Chapter 1: ``data``; 2: ``rays``, ``hull``; 3: ``marching``; 4: ``metrics``, ``fitting``; 5: ``fast``; 6: ``mesh``;
figures and glue: ``plotting``, ``book``; argument checks: ``checks``. Nothing is imported here, so the notebooks'
setup cell (``colab``) runs before torch is installed.
"""
