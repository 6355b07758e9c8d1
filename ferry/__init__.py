"""Ferry: cold migration of virtual machines between KVM hosts."""
