// Words of the console in Simplified Chinese (the default) and English, error codes in plain
// words, and dates in the site's time zone. The choice of language is kept in localStorage.

const zh = {
  app_title: "广播控制台",
  login_title: "登录广播控制台",
  name: "用户名", password: "密码", login: "登录", logout: "退出", logging_in: "正在登录…",
  language: "English", language_label: "切换语言",
  tab_broadcast: "喊话与播放", tab_history: "广播记录", tab_schedules: "定时广播",
  tab_audit: "操作日志", tab_users: "用户管理", tab_account: "我的账户",
  scope: "管辖范围", role_admin: "管理员", role_operator: "操作员",
  online_count: "在线 {online}/{total}", playing_count: "正在播放 {n}",
  live_feed_off: "实时状态连接中断，正在重试…",
  speakers_title: "喇叭状态", targets_title: "选择广播对象",
  all_in_scope: "全部（{name}）", clear: "清除", selected: "已选：{what}（{n} 个喇叭）",
  nothing_selected: "还没有选择对象：点上面的村、管区、喇叭，或“全部”",
  groups: "分组",
  st_online: "在线", st_offline: "离线", st_playing: "正在播放", st_alert: "警报",
  legend: "图例",
  pr_emergency: "紧急", pr_live: "喊话", pr_announcement: "通知", pr_background: "背景音乐",
  prn_emergency: "紧急广播", prn_live: "喊话", prn_announcement: "通知广播", prn_background: "背景音乐",
  talk_title: "现场喊话", talk_hold: "按住说话", talk_release: "松开结束",
  talk_key_hint: "也可以用键盘：选中这个按钮，按住空格键说话，松开结束",
  talk_latched: "点击开始喊话", talk_stop: "点击结束喊话", latched_mode: "锁定模式（点一下开始，再点一下结束）",
  emergency_mode: "紧急广播（最高优先级，最大音量）", chime: "提示音", no_chime: "无",
  talk_connecting: "正在接通…", talk_ready: "请讲话", talk_ending: "正在结束…",
  talk_ended: "喊话结束：{heard}/{total} 个喇叭播出",
  talk_refused: "喊话被拒绝：{why}",
  talk_cut: "被{priority}打断（{owner}）：{n} 个喇叭",
  talk_cut_all: "您的喊话已被{priority}打断（{owner}）",
  mic_denied: "无法使用麦克风：请在浏览器里允许使用麦克风",
  mic_insecure: "麦克风只能在 HTTPS 或本机地址下使用",
  level: "音量", elapsed: "时长",
  play_title: "播放音频", clip: "音频", priority: "优先级", play: "播放", repeat: "播放次数",
  no_clips: "音频库还是空的：请先上传或用文字生成",
  upload_title: "上传音频", choose_file: "选择文件", title: "标题", upload: "上传",
  uploading: "正在上传 {p}%", processing: "正在处理…", uploaded: "已上传：{title}",
  tts_title: "文字转语音", tts_text: "要播报的文字", tts_make: "生成语音", tts_preview: "试听",
  tts_play: "播放到喇叭", tts_made: "已生成：{title}（{s} 秒）",
  tts_no_preview: "试听暂不可用：控制器还没有提供音频下载",
  active_title: "正在进行的广播", none_active: "现在没有广播",
  stop: "停止", stopped: "已停止",
  started: "已开始播放：{n} 个喇叭",
  outcome_title: "各喇叭结果",
  by: "发起人", when: "时间", what: "内容", targets: "对象", state: "状态", result: "结果",
  details: "详情", refresh: "刷新", more: "更多",
  bs_queued: "排队中", bs_starting: "准备中", bs_playing: "播放中", bs_done: "已完成",
  bs_stopped: "已停止", bs_cut: "被打断", bs_failed: "失败", bs_interrupted: "中断",
  ss_pending: "等待", ss_playing: "播放中", ss_played: "已播出", ss_partial: "部分播出",
  ss_silent: "没有声音", ss_cut: "被打断", ss_stopped: "已停止", ss_offline: "离线",
  ss_unreachable: "联系不上", ss_refused: "被拒绝", ss_sent: "已发送", ss_interrupted: "中断",
  src_live: "现场喊话", src_clip: "音频", src_tts: "文字转语音", src_file: "上传文件",
  src_chime: "提示音", src_sequence: "组合",
  heard_of: "{heard}/{total} 播出",
  audit_action: "操作", audit_actor: "操作人", audit_detail: "内容",
  users_title: "用户", add_user: "添加用户", role: "角色", remove: "删除",
  confirm_remove: "确定删除用户 {name}？", user_added: "已添加用户 {name}",
  user_removed: "已删除用户 {name}",
  old_password: "原密码", new_password: "新密码", new_password2: "再输一次新密码",
  change_password: "修改密码", password_changed: "密码已修改",
  password_mismatch: "两次输入的新密码不一样",
  sched_title: "定时广播", sched_none: "还没有定时广播", sched_unavailable: "这个控制器没有开启定时广播",
  sched_add: "新建定时广播", sched_kind: "重复", k_once: "一次", k_daily: "每天", k_weekly: "每周",
  sched_at: "日期时间", sched_times: "时间（如 08:00,18:30）", sched_days: "星期",
  sched_next: "下次", sched_pause: "暂停", sched_resume: "恢复", sched_paused: "已暂停",
  sched_saved: "定时广播已保存", sched_audio: "内容", or_tts: "或输入文字",
  sched_need_audio: "请选择要播放的音频，或输入要播报的文字",
  d_mon: "一", d_tue: "二", d_wed: "三", d_thu: "四", d_fri: "五", d_sat: "六", d_sun: "日",
  save: "保存", cancel: "取消", yes: "是", no: "否",
  close: "关闭", loading: "正在加载…", error_generic: "出错了：{msg}",
  offline_reason: "离线原因", attacks: "发现攻击",
  seat: "街道驻地",
  speakers_n: "{n} 个喇叭",
  need_targets: "请先选择广播对象",
};

const en = {
  app_title: "Broadcast console",
  login_title: "Log in to the broadcast console",
  name: "User name", password: "Password", login: "Log in", logout: "Log out",
  logging_in: "Logging in…", language: "中文", language_label: "Switch language",
  tab_broadcast: "Page & play", tab_history: "History", tab_schedules: "Schedules",
  tab_audit: "Audit log", tab_users: "Users", tab_account: "My account",
  scope: "Scope", role_admin: "admin", role_operator: "operator",
  online_count: "Online {online}/{total}", playing_count: "Playing {n}",
  live_feed_off: "Live status lost, retrying…",
  speakers_title: "Speakers", targets_title: "Choose where to broadcast",
  all_in_scope: "Everything ({name})", clear: "Clear", selected: "Chosen: {what} ({n} speakers)",
  nothing_selected: "Nothing chosen yet: tap a village, an area, a speaker, or “Everything”",
  groups: "Groups",
  st_online: "online", st_offline: "offline", st_playing: "playing", st_alert: "alert",
  legend: "Legend",
  pr_emergency: "emergency", pr_live: "live page", pr_announcement: "announcement",
  pr_background: "background",
  prn_emergency: "an emergency broadcast", prn_live: "a live page",
  prn_announcement: "an announcement", prn_background: "background music",
  talk_title: "Live page", talk_hold: "Hold to talk", talk_release: "Release to end",
  talk_key_hint: "With the keyboard: focus this button, hold Space to talk, release to end",
  talk_latched: "Tap to start talking", talk_stop: "Tap to stop talking",
  latched_mode: "Latched (tap once to start, again to stop)",
  emergency_mode: "Emergency (highest priority, full volume)", chime: "Chime", no_chime: "None",
  talk_connecting: "Connecting…", talk_ready: "Speak now", talk_ending: "Ending…",
  talk_ended: "Page ended: {heard}/{total} speakers played it",
  talk_refused: "Page refused: {why}",
  talk_cut: "Cut by {priority} ({owner}) on {n} speakers",
  talk_cut_all: "Your page was cut by {priority} ({owner})",
  mic_denied: "Cannot use the microphone: allow it in the browser",
  mic_insecure: "The microphone works only over HTTPS or on this machine",
  level: "Level", elapsed: "Time",
  play_title: "Play audio", clip: "Audio", priority: "Priority", play: "Play", repeat: "Times",
  no_clips: "The library is empty: upload a file or make speech from text first",
  upload_title: "Upload audio", choose_file: "Choose file", title: "Title", upload: "Upload",
  uploading: "Uploading {p}%", processing: "Processing…", uploaded: "Uploaded: {title}",
  tts_title: "Text to speech", tts_text: "Text to read out", tts_make: "Make speech",
  tts_preview: "Preview", tts_play: "Play to speakers", tts_made: "Made: {title} ({s} s)",
  tts_no_preview: "Preview not available: the controller does not serve clip audio yet",
  active_title: "Broadcasts now", none_active: "Nothing is playing",
  stop: "Stop", stopped: "Stopped",
  started: "Started on {n} speakers",
  outcome_title: "Per speaker",
  by: "By", when: "When", what: "What", targets: "Where", state: "State", result: "Result",
  details: "Details", refresh: "Refresh", more: "More",
  bs_queued: "queued", bs_starting: "starting", bs_playing: "playing", bs_done: "done",
  bs_stopped: "stopped", bs_cut: "cut", bs_failed: "failed", bs_interrupted: "interrupted",
  ss_pending: "waiting", ss_playing: "playing", ss_played: "played", ss_partial: "partly played",
  ss_silent: "silent", ss_cut: "cut", ss_stopped: "stopped", ss_offline: "offline",
  ss_unreachable: "unreachable", ss_refused: "refused", ss_sent: "sent",
  ss_interrupted: "interrupted",
  src_live: "live page", src_clip: "clip", src_tts: "text to speech", src_file: "uploaded file",
  src_chime: "chime", src_sequence: "sequence",
  heard_of: "{heard}/{total} played",
  audit_action: "Action", audit_actor: "Who", audit_detail: "Detail",
  users_title: "Users", add_user: "Add user", role: "Role", remove: "Delete",
  confirm_remove: "Delete user {name}?", user_added: "User {name} added",
  user_removed: "User {name} deleted",
  old_password: "Current password", new_password: "New password",
  new_password2: "New password again", change_password: "Change password",
  password_changed: "Password changed", password_mismatch: "The two new passwords differ",
  sched_title: "Schedules", sched_none: "No schedules yet",
  sched_unavailable: "This controller runs without schedules",
  sched_add: "New schedule", sched_kind: "Repeat", k_once: "once", k_daily: "daily",
  k_weekly: "weekly", sched_at: "Date and time", sched_times: "Times (e.g. 08:00,18:30)",
  sched_days: "Days", sched_next: "Next", sched_pause: "Pause", sched_resume: "Resume",
  sched_paused: "paused", sched_saved: "Schedule saved", sched_audio: "Audio",
  sched_need_audio: "Choose a clip to play, or type text to read out",
  or_tts: "or type text",
  d_mon: "Mon", d_tue: "Tue", d_wed: "Wed", d_thu: "Thu", d_fri: "Fri", d_sat: "Sat",
  d_sun: "Sun",
  save: "Save", cancel: "Cancel", yes: "Yes", no: "No",
  close: "Close", loading: "Loading…", error_generic: "Something went wrong: {msg}",
  offline_reason: "Why offline", attacks: "Attacks seen",
  seat: "Subdistrict seat",
  speakers_n: "{n} speakers",
  need_targets: "Choose where to broadcast first",
};

// error codes in plain words; anything else falls back to the server's own message
const errors = {
  "zh-CN": {
    bad_audio: "这个文件不是音频", empty: "文件是空的", too_large: "文件太大了",
    forbidden: "超出您的管辖范围", busy: "喇叭正被更高级别的广播占用",
    unauthorized: "请先登录", unauthenticated: "请先登录", login_failed: "用户名或密码不对",
    login_throttled: "登录失败次数太多，请稍后再试", csrf_failed: "登录已过期，请重新登录",
    not_yours: "这个广播不是您发起的，不能停止", no_speakers: "选中的喇叭都不在线",
    unknown_target: "找不到这个广播对象", not_found: "找不到了，可能已被删除",
    no_target: "请先选择广播对象", overloaded: "系统繁忙，请稍后再试",
    bad_priority: "您没有权限使用这个优先级（紧急广播只限街道）",
    text_too_long: "文字太长了", empty_text: "请输入要播报的文字",
    weak_password: "密码太简单：请用更长、更复杂的密码", user_exists: "这个用户名已经有了",
    unknown_scope: "找不到这个管辖范围", bad_role: "角色不对", bad_name: "用户名不合规",
    network: "连不上控制器：请检查网络", cross_origin: "请求来自别的网站，已拒绝",
    no_scheduler: "这个控制器没有开启定时广播",
    bad_time: "时间格式不对：请按 24 小时制写，如 08:00 或 18:30",
    bad_rule: "定时规则不对", time_passed: "这个时间已经过去了，请选以后的时间",
    unknown_day: "星期写得不对", end_before_start: "结束日期早于开始日期",
    missing_field: "还有必填的内容没有填", ambiguous_audio: "请只选一种内容：音频或文字",
    unknown_chime: "没有这个提示音", storage: "存储出错，请联系管理员",
    internal: "控制器出错了（已记录），请稍后再试", speaker_error: "喇叭出错",
    scope_gone: "您的管辖范围已不存在", owner_gone: "发起人已不存在",
    not_decodable: "这个文件不是音频", not_audio: "这个文件不是音频", corrupt: "这个音频文件已损坏",
    unsupported_codec: "不支持这种音频格式", too_long: "音频太长了", tts_failed: "文字转语音失败",
    mic_denied: "无法使用麦克风：请在浏览器里允许使用麦克风", mic_error: "无法打开麦克风",
  },
  en: {
    bad_audio: "This file is not audio", empty: "The file is empty", too_large: "The file is too large",
    forbidden: "Outside your scope", busy: "The speakers are taken by a higher broadcast",
    unauthorized: "Please log in", unauthenticated: "Please log in",
    login_failed: "Wrong user name or password",
    login_throttled: "Too many failed logins: try again later",
    csrf_failed: "Your login has expired: log in again",
    not_yours: "You did not start this broadcast, so you cannot stop it",
    no_speakers: "None of the chosen speakers is online",
    unknown_target: "No such target", not_found: "Not found; it may have been deleted",
    no_target: "Choose where to broadcast first", overloaded: "The system is busy: try again soon",
    bad_priority: "You may not use this priority (emergency is for the subdistrict only)",
    text_too_long: "The text is too long", empty_text: "Type the text to read out",
    weak_password: "Password too simple: use a longer one", user_exists: "That user name is taken",
    unknown_scope: "No such scope", bad_role: "Wrong role", bad_name: "Not a valid user name",
    network: "Cannot reach the controller: check the network",
    cross_origin: "Request from another site refused",
    no_scheduler: "This controller runs without schedules",
    bad_time: "Wrong time: write it on the 24-hour clock, e.g. 08:00 or 18:30",
    bad_rule: "Wrong schedule rule", time_passed: "That time has passed: choose a later one",
    unknown_day: "Wrong day of the week", end_before_start: "The end date is before the start",
    missing_field: "Something required is missing", ambiguous_audio: "Give only one: a clip or text",
    unknown_chime: "No such chime", storage: "Storage fault: tell the administrator",
    internal: "The controller failed (logged): try again later", speaker_error: "Speaker fault",
    scope_gone: "Your scope no longer exists", owner_gone: "The owner no longer exists",
    not_decodable: "This file is not audio", not_audio: "This file is not audio",
    corrupt: "This audio file is damaged", unsupported_codec: "This audio format is not supported",
    too_long: "The audio is too long", tts_failed: "Text to speech failed",
    mic_denied: "Cannot use the microphone: allow it in the browser",
    mic_error: "Cannot open the microphone",
  },
};

const STRINGS = { "zh-CN": zh, en };
const KEY = "bc.lang";
let lang = localStorage.getItem(KEY) === "en" ? "en" : "zh-CN";
let timeZone = "Asia/Shanghai";

/** The current language: "zh-CN" or "en". */
export function getLang() { return lang; }

/** Switch language and remember the choice. */
export function setLang(next) {
  lang = next === "en" ? "en" : "zh-CN";
  localStorage.setItem(KEY, lang);
  document.documentElement.lang = lang;
}

/** The site's time zone, from the zone tree (defaults to Asia/Shanghai). */
export function setTimeZone(tz) { if (tz) timeZone = tz; }

/** A translated string with {name} placeholders filled in. */
export function t(key, vars = {}) {
  const s = STRINGS[lang][key] ?? STRINGS["zh-CN"][key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => (k in vars ? String(vars[k]) : `{${k}}`));
}

/** An API error in plain words: the known codes translated, else the server's message. */
export function errorText(err) {
  if (!err) return "";
  const code = err.code || err.error;
  const known = errors[lang][code];
  if (known) return known;
  return err.message || String(err);
}

/** A Unix time (seconds) as a date and time in the site's time zone. */
export function fmtTime(ts, withDate = true) {
  if (ts === null || ts === undefined || ts === "") return "";
  const d = typeof ts === "number" ? new Date(ts * 1000) : new Date(ts);
  if (Number.isNaN(d.getTime())) return String(ts);
  const opts = { timeZone, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false };
  if (withDate) Object.assign(opts, { year: "numeric", month: "2-digit", day: "2-digit" });
  return new Intl.DateTimeFormat(lang, opts).format(d);
}

/** Seconds as m:ss. */
export function fmtDuration(s) {
  const n = Math.max(0, Math.floor(s));
  return `${Math.floor(n / 60)}:${String(n % 60).padStart(2, "0")}`;
}

document.documentElement.lang = lang;
