"""Reports: what runs write for people.  ``outputs.py``: log lines (through tqdm, so progress bars stay intact),
image grids, GIFs, sample folders, output folders and loss logs; ``figures.py``: the paper's figures and the plots of
--eval and --compare.  Nothing here trains, samples or scores."""
