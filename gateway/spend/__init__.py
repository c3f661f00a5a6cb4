"""What calls cost: token measures and prices, the per-call meter, the ledger, budget holds."""
