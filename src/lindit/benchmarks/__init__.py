"""The lab: latency and memory measurements of lindit's methods at published model sizes.

``presets`` holds the published sizes (PixArt-Sigma XL/2, SD3.5-Medium, DiT-XL/2) and the papers' own numbers;
``targets`` the project's latency targets; the other modules are the runners behind ``lindit bench ...`` and
``lindit deploy bench`` / ``synthetic``. The library (everything outside ``lindit.benchmarks`` and
``lindit.cli``) never imports this package (``tests/test_cli_tree.py`` checks).
"""
