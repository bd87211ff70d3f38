"""Models the engine trains: the transformers wrapper (`transformer`), the classical CNN and
BiLSTM-CRF successors (`classical`), one interface over both (`factory`), and the one training
loop all of them and distillation share (`training`), so an optimizer fix lands everywhere.
"""
