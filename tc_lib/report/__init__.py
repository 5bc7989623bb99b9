"""The report: statistics over runs (stats), figures (plots), sections computed from run records
(sections, memory_section), the single-run view of train.ipynb (run_view), and rendering to
HTML/PDF (render) behind the `report` command."""
