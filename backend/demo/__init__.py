"""`feasible-al demo`: the backend in a real Label Studio, end to end (see `backend.demo.run`).

data (corpus -> pool + held-out gold), stack (start or connect the services), rounds (annotate
from `/next`, train, measure), successor (PLASM build and download), quality (held-out scores),
report (what is printed and written)."""
