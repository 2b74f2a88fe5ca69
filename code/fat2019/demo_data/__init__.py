"""The synthetic demo dataset of code/make_demo_data.py, in the competition's layout:
plan.py (which clips, labels and formats), synthesis.py (the class recipes and each clip's
audio), writing.py (the folder, its CSVs and its marker)."""
