# EWN alert texts, English (en-US). Every message here must exist in every catalogue the
# fan-out is configured with: a missing one stops the fan-out at start (ewn_fanout::i18n).

level-LOW = LOW
level-MEDIUM = MEDIUM
level-HIGH = HIGH
level-CRITICAL = CRITICAL

headline = { $level }: { $event } (score { $score })
headline-update = Update, { $level }: { $event } (score { $score })
headline-cancel = Cancelled: { $event }

description-summary = Rule { $rule } raised level { $level } with score { $score }.
description-reasons = Reasons (factor, contribution, detail):
description-incidents = Incidents:
description-states = States:

# Event names and instructions per default rule; a rule without its own falls back to
# event-generic (the rule's name, humanised) and instruction-generic.
event-generic = { $rule }
event-cross_border_movement = Cross-border movement
event-area_burst = Burst of reports in one area
event-watchlist_hit = Watch-list hit
event-exit_without_entry = Exit without entry
event-ftf_returnee = Returning foreign fighter

instruction-generic = Review the alert and its incidents; acknowledge it on the desk console.
instruction-cross_border_movement = Check the subject against both states' crossing records and tell the receiving state's desk.
instruction-area_burst = Alert the patrols of the area and look for a common cause of the reports.
instruction-watchlist_hit = Follow the watch list's procedure: hold the subject for secondary inspection and inform the listing authority.
instruction-exit_without_entry = Ask the neighbouring states whether the subject entered; treat as missing at the border until found.
instruction-ftf_returnee = Hand the case to the counter-terrorism unit named in the returnee procedure.
