"""AgentOps: a control plane for teams of autonomous AI developer agents on NATS JetStream."""

__version__ = "0.1.0"
