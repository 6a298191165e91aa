"""Payments in: the POS application's reports (local API, log files), timeouts, in doubt.

Every source hands its reports to :meth:`Payments.submit` (``agent.payments``
of the running :class:`agent.daemon.Agent`); see :mod:`.intake`, the pure
state machine in :mod:`.book` and the field rules in :mod:`.fields`.
"""

from .fields import PaymentError
from .intake import Payments

__all__ = ["PaymentError", "Payments"]
