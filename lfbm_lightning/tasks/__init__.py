"""The evaluation tasks behind evaluate.py (docs/paper.md), one module and one
``conf/task/<name>.yaml`` each (:mod:`lfbm_lightning.tasks.task`).

Naming: an MSE without suffix is on the images' [-1, 1] scale (the paper's), ``_01`` marks the
[0, 1] scale (a quarter of it); every MSE is a per-pixel mean per image, averaged over images.
"""
