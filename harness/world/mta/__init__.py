"""The world's receiving MTAs: :class:`~harness.world.mta.server.ReceivingMta`, its SMTP
sessions (scripted replies and faults), its STARTTLS set-up and the records it keeps.
"""
