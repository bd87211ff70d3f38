"""PLASM, the successor of any architecture built from the acquisition model's labels: teacher
fine-tuning, pseudo-labeling, uncertainty and TracIn filtering, successor training (`pipeline`,
`tracin`), the half-depth student for acquisition (`distill`), and the export (`export`, with the
model card in `templates/`). The successor RQ job and `feasible-al plasm` both call `pipeline`.
"""
