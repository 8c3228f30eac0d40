"""Engine configuration: every capacity is fixed here, up front, and validated at start."""
import msgspec

from matchcore.errors import ConfigError

__all__ = ["EngineConfig", "ConfigError"]


class EngineConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Capacities of one engine. Reaching any of them is a typed reject, never a crash.

    Ids are dense: an account id is in ``[0, max_accounts)``, an asset id in
    ``[0, max_assets)``, an instrument id in ``[0, max_instruments)``.
    """

    max_accounts: int = 10_000
    max_assets: int = 16
    max_instruments: int = 64
    #: live (resting or matching) orders, all instruments together
    max_orders: int = 1_000_000
    #: price levels per side of one book
    max_price_levels: int = 4_096
    #: the account credited with every fee; it exists from the start
    fee_account_id: int = 0

    def validate(self) -> "EngineConfig":
        """Raise ConfigError unless every field is in range; return self."""
        limits = {
            "max_accounts": (1, 1 << 31),
            "max_assets": (1, 1 << 16),
            "max_instruments": (1, 1 << 20),
            "max_orders": (1, 1 << 30),
            "max_price_levels": (1, 1 << 24),
        }
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ConfigError(f"{name}={value} is outside [{low}, {high}]")
        if not 0 <= self.fee_account_id < self.max_accounts:
            raise ConfigError(f"fee_account_id={self.fee_account_id} is not a valid account id")
        return self
