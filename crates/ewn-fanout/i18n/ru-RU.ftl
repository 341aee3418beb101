# Тексты оповещений EWN, русский (ru-RU). Те же сообщения, что в en-US.ftl.

level-LOW = НИЗКИЙ
level-MEDIUM = СРЕДНИЙ
level-HIGH = ВЫСОКИЙ
level-CRITICAL = КРИТИЧЕСКИЙ

headline = { $level }: { $event } (оценка { $score })
headline-update = Обновление, { $level }: { $event } (оценка { $score })
headline-cancel = Отменено: { $event }

description-summary = Правило { $rule } подняло уровень { $level } с оценкой { $score }.
description-reasons = Основания (фактор, вклад, подробности):
description-incidents = Инциденты:
description-states = Государства:

event-generic = { $rule }
event-cross_border_movement = Пересечение границы между государствами
event-area_burst = Всплеск сообщений в одном районе
event-watchlist_hit = Совпадение со списком наблюдения
event-exit_without_entry = Выезд без въезда
event-ftf_returnee = Возвращение иностранного боевика

instruction-generic = Изучите оповещение и его инциденты; подтвердите его в консоли дежурного.
instruction-cross_border_movement = Сверьте субъекта с данными о пересечениях обоих государств и сообщите дежурному принимающего государства.
instruction-area_burst = Оповестите патрули района и выясните общую причину сообщений.
instruction-watchlist_hit = Действуйте по процедуре списка наблюдения: направьте субъекта на углублённый досмотр и уведомите орган, внёсший его в список.
instruction-exit_without_entry = Запросите соседние государства, въезжал ли субъект; до его обнаружения считайте его пропавшим на границе.
instruction-ftf_returnee = Передайте дело подразделению по борьбе с терроризмом, указанному в процедуре для возвращающихся.
