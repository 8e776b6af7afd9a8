"""Command-line helpers beside main.py: ``tools/noise_rules.py`` computes NCSNv2's noise schedule and step size
(Techniques 1, 2 and 4) for a config's data set and prints them as a YAML fragment to paste into a config;
``tools/fid_stats.py`` writes a run's reference statistics as a published file (TTUR or score_sde format).
Tools only wire: they read configs through configs/ and data through datasets/; the rules live in sampling/."""
