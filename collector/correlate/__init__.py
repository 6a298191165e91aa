"""The correlator: from the stored events to a cause for every failed payment, and incidents.

- :mod:`.model`     the types shared by the pieces (a payment row, evidence, a verdict)
- :mod:`.rules`     pure: the evidence around one payment -> its cause (no I/O)
- :mod:`.evidence`  reads the evidence around a payment from the database
- :mod:`.service`   the background task in the collector: follows the events table,
                    keeps the current-state tables, (re)attributes payments, runs incidents
- :mod:`.incidents` opens and closes payment and health incidents
"""
