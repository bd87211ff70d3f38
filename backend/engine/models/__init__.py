"""Models the engine trains: the transformers wrapper (`transformer`, with its hyper-parameters in
`config`, tokenisation and batching in `encoding` and the LP-FT head initialisation in `probe`),
the classical CNN and BiLSTM-CRF successors (`classical`), one interface over both (`factory`),
and the one training loop all of them and distillation share (`training`), so an optimizer fix
lands everywhere.
"""
