// Lookalike's web app: search by text, image (or a part of it) and examples, and clean up
// near-duplicates. Plain JavaScript over the JSON API; no framework, no build step.
'use strict';

const TOKEN_KEY = 'lookalike-token';
const MIN_BOX = 0.02; // a drag smaller than this (a fraction of the image) is a click
const DUPLICATES_PER_ITEM = 10;

const state = {
  image: null, // {dataUrl, objectUrl} of the query image
  box: null, // [x0, y0, x1, y1] drawn on the query image, fractions
  drag: null, // where the pointer went down, while drawing a box
  base: null, // {query, description}: what is searched (text, image and box, or an item)
  lastSearch: null, // {query, description}: the base as last refined: what k and the filter rerun
  searchSeq: 0, // only the latest search's answer is shown
  selected: new Set(), // ids for "more like these"
  rejected: new Set(), // ids marked "not like this"
  tokenPrompt: null, // the pending token request, shared by all calls that got a 401
  imageFacts: new Map(), // id -> {width, height, bytes} as the server recorded the image
  matches: [], // the results shown, as the API answered them
};

const $ = (testid, root = document) => root.querySelector(`[data-testid="${testid}"]`);

// -- the API -------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Calls the API (`path` relative to the page, so that a proxy may serve it under a prefix)
 * with the session's token; on 401 asks for a token and retries. Answers the parsed JSON, or
 * a Blob for other content; throws ApiError with the server's message. */
async function api(method, path, body) {
  for (;;) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = token ? { authorization: `Bearer ${token}` } : {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    }).catch(() => {
      throw new ApiError(0, 'The server did not answer: is it running?');
    });
    if (response.status === 401) {
      if (sessionStorage.getItem(TOKEN_KEY) === token) await askForToken(token !== null);
      continue;
    }
    if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
    const type = response.headers.get('content-type') || '';
    return type.includes('application/json') ? response.json() : response.blob();
  }
}

async function errorMessage(response) {
  try {
    return (await response.json()).error.message;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

function askForToken(refused) {
  state.tokenPrompt ||= promptForToken(refused).finally(() => {
    state.tokenPrompt = null;
  });
  return state.tokenPrompt;
}

async function promptForToken(refused) {
  $('token-text').textContent = refused
    ? 'The server refused that token. Enter the right one.'
    : 'This server needs a token (its --token).';
  $('token-input').value = '';
  if (!(await showDialog($('token-dialog')))) throw new ApiError(401, 'A token is needed.');
  sessionStorage.setItem(TOKEN_KEY, $('token-input').value.trim());
}

function itemPath(id) {
  // one segment, slashes and all: the browser then resolves no '..' inside an id
  return `v1/items/${encodeURIComponent(id)}`;
}

// -- small helpers -------------------------------------------------------------------------

/** The action, with its error shown to the user rather than lost. */
function guarded(action) {
  return async (...args) => {
    showError('');
    try {
      await action(...args);
    } catch (error) {
      showError(error.message);
    }
  };
}

function showError(message) {
  $('error').textContent = message;
  $('error').hidden = !message;
}

/** Opens a modal <dialog> whose form closes it; true when closed by its "ok" button. */
function showDialog(dialog) {
  dialog.returnValue = '';
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
  });
}

function fromTemplate(id) {
  return document.getElementById(id).content.firstElementChild.cloneNode(true);
}

function plural(count, word, words = `${word}s`) {
  return `${count} ${count === 1 ? word : words}`;
}

/** Places an absolutely positioned element over [x0, y0, x1, y1] (fractions) of its parent. */
function placeBox(element, [x0, y0, x1, y1]) {
  Object.assign(element.style, {
    left: `${x0 * 100}%`,
    top: `${y0 * 100}%`,
    width: `${(x1 - x0) * 100}%`,
    height: `${(y1 - y0) * 100}%`,
  });
  element.hidden = false;
}

/** Shows the item's thumbnail in `holder` (its <img>), or leaves the placeholder. */
async function loadThumbnail(holder, id) {
  let blob;
  try {
    blob = await api('GET', `${itemPath(id)}/thumbnail`);
  } catch (error) {
    if (error.status !== 404) holder.querySelector('.placeholder').textContent = 'no preview';
    return;
  }
  if (!holder.isConnected) return; // replaced while it loaded
  const img = holder.querySelector('img');
  img.src = URL.createObjectURL(blob);
  await img.decode().catch(() => {});
  img.hidden = false;
  holder.querySelector('.placeholder').hidden = true;
  const frame = holder.querySelector('.frame');
  if (frame) fitFrame(frame, img.naturalWidth / img.naturalHeight);
}

/** Fits `frame` to where an image of this aspect ratio lies in its square holder
 * (object-fit: contain), so that boxes inside it land on the image. */
function fitFrame(frame, ratio) {
  const width = Math.min(1, ratio); // fractions of the square
  const height = Math.min(1, 1 / ratio);
  placeBox(frame, [(1 - width) / 2, (1 - height) / 2, (1 + width) / 2, (1 + height) / 2]);
}

/** Empties a list, releasing the object URLs of its thumbnails. */
function clearList(list) {
  for (const img of list.querySelectorAll('img[src^="blob:"]')) URL.revokeObjectURL(img.src);
  list.replaceChildren();
}

// -- stats ---------------------------------------------------------------------------------

async function loadStats() {
  let stats;
  try {
    stats = await api('GET', 'v1/stats');
  } catch (error) {
    $('stats').textContent = error.status === 401 ? 'A token is needed.' : 'Not connected.';
    $('reconnect').hidden = false;
    throw error;
  }
  $('reconnect').hidden = true;
  $('stats').textContent = [
    plural(stats.items, 'item'),
    `model ${stats.model_id}`,
    stats.precision,
    stats.providers.join(', '),
  ].join(' · ');
  $('random-notice').hidden = !stats.random_weights;
  showCollection(stats);
  const text = $('text-query');
  text.disabled = !stats.text_enabled;
  if (!stats.text_enabled) text.placeholder = 'this server has no text model';
  if (!$('dup-threshold').value) $('dup-threshold').value = stats.duplicates_threshold;
  $('dup-calibration').textContent = stats.duplicates_threshold_calibrated
    ? `${stats.duplicates_threshold} was calibrated for ${stats.model_id}.`
    : `${stats.duplicates_threshold} is the uncalibrated default: run "lookalike duplicates ` +
      '--calibrate" and start the server with --duplicates-threshold for this model\'s own.';
}

/** The collection view: what the server holds and runs, one row each. */
function showCollection(stats) {
  const index = stats.index;
  const rows = [
    ['Items', stats.items.toLocaleString('en')],
    ['Vectors', `${stats.vectors.toLocaleString('en')}: whole images and regions`],
    ['Regions', (stats.vectors - stats.items).toLocaleString('en')],
    ['Disk', formatBytes(stats.disk_bytes)],
    [
      'Model',
      `${stats.model_id} (${stats.model_family}, ${stats.dims}-d)` +
        (stats.random_weights ? ', random weights' : ''),
    ],
    ['Engine', `${stats.precision} on ${stats.providers.join(', ')}`],
    ['Text', stats.text_enabled ? stats.text_precision : 'off'],
    ['Preprocessing', stats.preprocess_mode],
    ['Index', `${index.dtype} on ${index.kernel} kernels, connectivity ${index.connectivity}`],
    ['Index version', stats.index_version || 'a data directory (read-write)'],
    [
      'Duplicates threshold',
      `${stats.duplicates_threshold}` +
        (stats.duplicates_threshold_calibrated ? ' (calibrated)' : ' (uncalibrated default)'),
    ],
    ['Server', `lookalike ${stats.version}, up ${Math.round(stats.uptime_seconds)} s`],
  ];
  $('collection-stats').replaceChildren(
    ...rows.flatMap(([term, value]) => [
      Object.assign(document.createElement('dt'), { textContent: term }),
      Object.assign(document.createElement('dd'), { textContent: value }),
    ]),
  );
}

// -- search --------------------------------------------------------------------------------

function parseFilter(text) {
  const filter = {};
  for (const pair of text.split(',').map((part) => part.trim()).filter(Boolean)) {
    const equals = pair.indexOf('=');
    if (equals < 1) {
      throw new Error(`The filter is key=value pairs separated by commas: "${pair}" is not one.`);
    }
    filter[pair.slice(0, equals).trim()] = pair.slice(equals + 1).trim();
  }
  return filter;
}

/** A new query: it becomes what the marks refine, and the marks of the one before go. */
function searchAnew(query, description) {
  state.base = { query, description };
  clearMarks();
  return search(query, description);
}

async function search(query, description) {
  const body = { ...query, k: Number($('k').value), filter: parseFilter($('filter').value) };
  state.lastSearch = { query, description };
  const seq = ++state.searchSeq;
  $('status').textContent = `Searching ${description}…`;
  const answer = await api('POST', 'v1/search', body).catch((error) => {
    if (seq === state.searchSeq) {
      $('status').textContent = '';
      showResults([]); // they answered another query
    }
    throw error;
  });
  if (seq !== state.searchSeq) return;
  showResults(answer.matches);
  const found = plural(answer.matches.length, 'match', 'matches');
  $('status').textContent = `${found} for ${description}${answer.exact ? '' : ' (approximate)'}`;
}

function rerun() {
  if (state.lastSearch) return search(state.lastSearch.query, state.lastSearch.description);
}

/** The form's submit: a search by its text, or else the last search again (new filter or k). */
function submitSearch(event) {
  event.preventDefault();
  const text = $('text-query').value.trim();
  if (text) {
    if (state.image) removeImage(); // the query is the text now
    hideQueryItem();
    return searchAnew({ text }, `“${text}”`);
  }
  if (!state.lastSearch) throw new Error('Type what you look for, or choose an image.');
  return rerun();
}

function searchImage() {
  const query = { image: state.image.dataUrl };
  if (state.box) query.box = state.box;
  return searchAnew(query, state.box ? 'the part of the image' : 'the image');
}

/** A stored item as the query: the panel shows it (not an image searched before). */
function moreLikeThis(id) {
  if (state.image) removeImage();
  $('text-query').value = '';
  showQueryItem(id);
  return searchAnew({ id, exclude_self: true }, `more like ${id}`);
}

function showQueryItem(id) {
  const panel = $('query-item');
  $('query-item-id', panel).textContent = id;
  const holder = panel.querySelector('.thumb');
  const img = holder.querySelector('img');
  if (img.src.startsWith('blob:')) URL.revokeObjectURL(img.src);
  img.hidden = true;
  img.removeAttribute('src');
  holder.querySelector('.placeholder').hidden = false;
  panel.hidden = false;
  loadThumbnail(holder, id);
}

function hideQueryItem() {
  $('query-item').hidden = true;
}

/** The query searched again, moved towards the results marked "like this" and away from
 * those marked "not like this"; the marks stay for the next refinement. */
function refine() {
  const { query, description } = state.base;
  const positives = [...state.selected].map((id) => ({ id }));
  const negatives = [...state.rejected].map((id) => ({ id }));
  const marks = [
    positives.length ? `like ${positives.length}` : '',
    negatives.length ? `not like ${negatives.length}` : '',
  ].filter(Boolean);
  return search(
    { ...query, positives, negatives, exclude_self: true },
    `${description}, refined: ${marks.join(', ')}`,
  );
}

// -- the query image and its box -----------------------------------------------------------

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`Could not read ${file.name}.`));
    reader.readAsDataURL(file);
  });
}

async function useImage(file) {
  if (file.type && !file.type.startsWith('image/')) {
    throw new Error(`${file.name} is not an image.`);
  }
  const dataUrl = await readAsDataUrl(file);
  if (state.image) URL.revokeObjectURL(state.image.objectUrl);
  state.image = { dataUrl, objectUrl: URL.createObjectURL(file) };
  $('query-image').src = state.image.objectUrl;
  $('query-panel').hidden = false;
  hideQueryItem();
  $('text-query').value = ''; // the query is the image now
  showView('search');
  setBox(null);
  try {
    await searchImage();
  } catch (error) {
    removeImage(); // refused: what is shown is what is searched
    throw error;
  }
}

function removeImage() {
  URL.revokeObjectURL(state.image.objectUrl);
  state.image = null;
  $('query-image').removeAttribute('src');
  $('query-panel').hidden = true;
  $('image-input').value = '';
  setBox(null);
}

/** "Remove image": its query ends too, with its results and marks (what is shown is what is
 * searched); a new k or an empty search then sends nothing. */
function endImageQuery() {
  removeImage();
  state.base = null;
  state.lastSearch = null;
  state.searchSeq += 1; // an answer still on its way is not shown
  clearMarks();
  showResults([]);
  $('status').textContent = '';
}

function setBox(box) {
  state.box = box;
  if (box) placeBox($('query-box'), box);
  else $('query-box').hidden = true;
  $('clear-box').hidden = !box;
}

/** The pointer's place on the shown (upright) query image, as fractions, within it. */
function pointOnImage(event) {
  const rect = $('query-image').getBoundingClientRect();
  const clamp = (value) => Math.min(1, Math.max(0, value));
  return [
    clamp((event.clientX - rect.left) / rect.width),
    clamp((event.clientY - rect.top) / rect.height),
  ];
}

function boxBetween([ax, ay], [bx, by]) {
  return [Math.min(ax, bx), Math.min(ay, by), Math.max(ax, bx), Math.max(ay, by)];
}

function startBox(event) {
  if (event.button !== 0) return;
  event.preventDefault();
  event.currentTarget.setPointerCapture(event.pointerId);
  state.drag = pointOnImage(event);
}

function moveBox(event) {
  if (state.drag) placeBox($('query-box'), boxBetween(state.drag, pointOnImage(event)));
}

function endBox(event) {
  if (!state.drag) return;
  const box = boxBetween(state.drag, pointOnImage(event));
  state.drag = null;
  if (box[2] - box[0] < MIN_BOX || box[3] - box[1] < MIN_BOX) {
    setBox(state.box); // a click: the box stays as it was
    return;
  }
  setBox(box);
  return searchImage();
}

function clearBox() {
  setBox(null);
  return searchImage();
}

// -- results -------------------------------------------------------------------------------

function showResults(matches) {
  state.matches = matches;
  clearList($('results'));
  $('results').append(...matches.map(resultCard));
  $('result-actions').hidden = matches.length === 0;
}

// -- acting on results ---------------------------------------------------------------------

/** The results the actions apply to: every one shown, or those marked "like this". */
function chosenMatches() {
  const matches = state.matches || [];
  if ($('act-on').value === 'liked') {
    const chosen = matches.filter((match) => state.selected.has(match.id));
    if (!chosen.length) throw new Error('No result shown is marked “like this”.');
    return chosen;
  }
  if (!matches.length) throw new Error('There are no results to act on.');
  return matches;
}

function resultsJson(matches) {
  const rows = matches.map(({ id, score, metadata, region, image }) => ({
    id,
    score,
    metadata,
    region,
    image,
  }));
  return JSON.stringify(rows, null, 2);
}

/** id, score, the image's size, then one column per metadata key (RFC 4180 quoting). */
function resultsCsv(matches) {
  const keys = [...new Set(matches.flatMap((match) => Object.keys(match.metadata)))].sort();
  const header = ['id', 'score', 'width', 'height', 'bytes', ...keys];
  const cell = (value) => {
    const text = value === undefined || value === null ? '' : String(value);
    return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
  };
  const rows = matches.map((match) => [
    match.id,
    match.score,
    match.image?.width,
    match.image?.height,
    match.image?.bytes,
    ...keys.map((key) => match.metadata[key]),
  ]);
  return [header, ...rows].map((row) => row.map(cell).join(',')).join('\r\n') + '\r\n';
}

function download(text, type, name) {
  const link = document.createElement('a');
  link.href = URL.createObjectURL(new Blob([text], { type }));
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

async function copyResults() {
  const matches = chosenMatches();
  await navigator.clipboard.writeText(resultsJson(matches));
  $('status').textContent = `Copied ${plural(matches.length, 'result')} as JSON.`;
}

async function tagResults() {
  const ids = chosenMatches().map((match) => match.id);
  $('tag-text').textContent = `Tag ${plural(ids.length, 'item')}: the next search can filter on it.`;
  $('tag-input').value = '';
  if (!(await showDialog($('tag-dialog')))) return;
  const set = parseFilter($('tag-input').value);
  if (!Object.keys(set).length) throw new Error('Give at least one key=value pair to set.');
  const answer = await api('POST', 'v1/metadata', { ids, set });
  await rerun();
  $('status').textContent += ` · tagged ${plural(answer.updated, 'item')}`;
}

async function deleteResults() {
  const ids = chosenMatches().map((match) => match.id);
  if (!(await confirmDelete(ids, ''))) return;
  await api('POST', 'v1/delete', { ids });
  clearMarks();
  await Promise.all([rerun(), loadStats()]);
}

/** Asks before deleting, listing every id that goes; true when confirmed. */
function confirmDelete(ids, warning) {
  $('confirm-text').textContent =
    `Delete ${plural(ids.length, 'item')}? This cannot be undone.` + warning;
  $('confirm-list').replaceChildren(
    ...ids.map((id) => Object.assign(document.createElement('li'), { textContent: id })),
  );
  return showDialog($('confirm-dialog'));
}

function resultCard(match) {
  const card = fromTemplate('card-template');
  card.dataset.id = match.id;
  $('card-id', card).textContent = match.id;
  $('card-id', card).title = match.id;
  $('card-score', card).textContent = `score ${match.score.toFixed(3)}`;
  const line = metadataLine(match);
  $('card-meta', card).textContent = line;
  $('card-meta', card).title = line;
  const thumb = $('open-item', card);
  thumb.setAttribute('aria-label', `Show ${match.id}`);
  thumb.addEventListener('click', guarded(() => openItem(match.id)));
  const more = $('more-like-this', card);
  more.setAttribute('aria-label', `More like ${match.id}`);
  more.addEventListener('click', guarded(() => moreLikeThis(match.id)));
  if (match.region) showRegion($('region-box', card), match.region);
  const select = $('select', card);
  select.setAttribute('aria-label', `Like ${match.id}`);
  select.addEventListener('change', () => mark(match.id, state.selected, select.checked));
  const reject = $('not-like', card);
  reject.setAttribute('aria-label', `Not like this: ${match.id}`);
  reject.addEventListener('click', () => {
    mark(match.id, state.rejected, !state.rejected.has(match.id));
  });
  syncCard(card);
  loadThumbnail(thumb, match.id);
  return card;
}

/** One line for a card: the image's size, then the metadata as key=value. */
function metadataLine(match) {
  const pairs = Object.entries(match.metadata).map(([key, value]) => `${key}=${value}`);
  return [match.image ? describeFacts(match.image) : null, ...pairs].filter(Boolean).join(' · ');
}

/** The item view: its thumbnail with its regions, its id, size, metadata. */
async function openItem(id) {
  const item = await api('GET', itemPath(id));
  const dialog = $('item-dialog');
  $('item-id').textContent = item.id;
  $('item-facts').textContent = describeFacts(item.image);
  $('item-metadata').replaceChildren(...metadataRows(item.metadata));
  $('item-regions').replaceChildren(
    ...item.regions.map((region) => {
      const box = document.createElement('span');
      box.className = 'box region';
      showRegion(box, region);
      return box;
    }),
  );
  $('item-region-count').textContent = item.regions.length
    ? `${plural(item.regions.length, 'region')}, each searchable on its own`
    : '';
  const holder = dialog.querySelector('.thumb');
  const img = holder.querySelector('img');
  if (img.src.startsWith('blob:')) URL.revokeObjectURL(img.src);
  img.hidden = true;
  img.removeAttribute('src');
  holder.querySelector('.placeholder').hidden = false;
  holder.querySelector('.placeholder').textContent = 'no thumbnail';
  $('item-more-like-this').onclick = guarded(async () => {
    dialog.close();
    showView('search');
    await moreLikeThis(id);
  });
  dialog.showModal();
  await loadThumbnail(holder, id);
}

function metadataRows(metadata) {
  return Object.entries(metadata).flatMap(([key, value]) => {
    const term = document.createElement('dt');
    const detail = document.createElement('dd');
    term.textContent = key;
    detail.textContent = value;
    return [term, detail];
  });
}

function showRegion(element, region) {
  placeBox(element, region.box);
  element.title = region.label ? `matched region: ${region.label}` : 'matched region';
}

/** Adds `id` to `set` (selected or rejected) and takes it out of the other one. */
function mark(id, set, on) {
  state.selected.delete(id);
  state.rejected.delete(id);
  if (on) set.add(id);
  updateSelection();
}

function syncCard(card) {
  const id = card.dataset.id;
  $('select', card).checked = state.selected.has(id);
  $('not-like', card).setAttribute('aria-pressed', String(state.rejected.has(id)));
  card.classList.toggle('selected', state.selected.has(id));
  card.classList.toggle('rejected', state.rejected.has(id));
}

function updateSelection() {
  const { selected, rejected } = state;
  $('selection-bar').hidden = selected.size + rejected.size === 0;
  $('selection-count').textContent = `${selected.size} like this · ${rejected.size} not like this`;
  document.querySelectorAll('.card').forEach(syncCard);
}

function clearMarks() {
  state.selected.clear();
  state.rejected.clear();
  updateSelection();
}

// -- duplicates ----------------------------------------------------------------------------

/** Every pair at or above the threshold ([id, id, score]) and what the server recorded of
 * each image (id -> {width, height, bytes}), page by page, with the progress shown. */
async function scanPairs(threshold, filter) {
  const pairs = [];
  const facts = new Map();
  let cursor = 0;
  let scanned = 0;
  do {
    const params = new URLSearchParams({ threshold, k: DUPLICATES_PER_ITEM, cursor });
    for (const [key, value] of Object.entries(filter)) params.append('filter', `${key}=${value}`);
    const page = await api('GET', `v1/duplicates?${params}`);
    scanned += page.scanned;
    showProgress(scanned, page.total);
    for (const item of page.items) {
      if (item.image) facts.set(item.id, item.image);
      for (const { id, score, image } of item.neighbours) {
        pairs.push([item.id, id, score]);
        if (image) facts.set(id, image);
      }
    }
    cursor = page.next_cursor;
  } while (cursor !== null);
  return { pairs, facts };
}

function showProgress(scanned, total) {
  const bar = $('dup-progress');
  bar.hidden = false;
  bar.querySelector('progress').max = Math.max(total, 1);
  bar.querySelector('progress').value = scanned;
  bar.querySelector('span').textContent = `Scanned ${scanned} of ${plural(total, 'item')}`;
}

/** Groups the pairs' ids transitively (union-find): each group sorted, largest groups first. */
function groupPairs(pairs) {
  const parent = new Map();
  const root = (id) => {
    while (parent.get(id) !== id) {
      parent.set(id, parent.get(parent.get(id)));
      id = parent.get(id);
    }
    return id;
  };
  for (const [a, b] of pairs) {
    if (!parent.has(a)) parent.set(a, a);
    if (!parent.has(b)) parent.set(b, b);
    parent.set(root(a), root(b));
  }
  const groups = new Map();
  for (const id of parent.keys()) {
    const group = groups.get(root(id)) || [];
    groups.set(root(id), [...group, id]);
  }
  return [...groups.values()]
    .map((group) => group.sort())
    .sort((a, b) => b.length - a.length || a[0].localeCompare(b[0]));
}

async function findDuplicates(event) {
  event?.preventDefault();
  const threshold = Number($('dup-threshold').value);
  const filter = parseFilter($('dup-filter').value);
  $('dup-scan').disabled = true;
  try {
    clearList($('dup-groups'));
    $('dup-actions').hidden = true;
    const { pairs, facts } = await scanPairs(threshold, filter);
    state.imageFacts = facts;
    const closest = new Map(); // each id's highest score with another
    for (const [a, b, score] of pairs) {
      for (const id of [a, b]) closest.set(id, Math.max(score, closest.get(id) ?? -1));
    }
    const groups = groupPairs(pairs);
    $('dup-groups').append(...groups.map((ids) => groupCard(ids, closest)));
    showKept();
    $('dup-actions').hidden = groups.length === 0;
    $('dup-progress').querySelector('span').textContent += groups.length
      ? `: ${plural(groups.length, 'group')} of near-duplicates at ${threshold} or more`
      : `: no near-duplicates at ${threshold} or more`;
    updateMarked();
  } finally {
    $('dup-scan').disabled = false;
  }
}

function groupCard(ids, closest) {
  const group = fromTemplate('group-template');
  group.querySelector('.group-title').textContent = `${ids.length} near-identical images`;
  group.querySelector('.group-items').append(...ids.map((id) => copyCard(id, closest.get(id))));
  return group;
}

function copyCard(id, score) {
  const copy = fromTemplate('copy-template');
  copy.dataset.id = id;
  $('dup-id', copy).textContent = id;
  $('dup-id', copy).title = id;
  $('dup-facts', copy).textContent = describeFacts(state.imageFacts.get(id));
  const thumb = $('open-item', copy);
  thumb.setAttribute('aria-label', `Show ${id}`);
  thumb.addEventListener('click', guarded(() => openItem(id)));
  $('dup-score', copy).textContent = `closest ${score.toFixed(4)}`;
  const checkbox = $('dup-mark', copy);
  checkbox.setAttribute('aria-label', `Delete ${id}`);
  checkbox.addEventListener('change', updateMarked);
  loadThumbnail(copy.querySelector('.thumb'), id);
  return copy;
}

function markedIds() {
  return [...document.querySelectorAll('[data-testid="dup-mark"]:checked')].map(
    (checkbox) => checkbox.closest('.copy').dataset.id,
  );
}

function updateMarked() {
  const count = markedIds().length;
  $('dup-count').textContent = `${plural(count, 'copy', 'copies')} marked`;
  $('dup-delete').disabled = count === 0;
  document.querySelectorAll('.copy').forEach((copy) => {
    copy.classList.toggle('marked', $('dup-mark', copy).checked);
  });
}

function describeFacts(image) {
  if (!image) return 'size not recorded';
  return `${image.width}×${image.height} px · ${formatBytes(image.bytes)}`;
}

function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 ** 2) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 ** 2).toFixed(1)} MB`;
}

/** Which copy of a group each rule keeps. Copies whose size was not recorded come last;
 * ties go to the first id, so the same group always keeps the same copy. */
const KEEP_RULES = {
  largest: (a, b) => b.pixels - a.pixels || b.bytes - a.bytes,
  smallest: (a, b) => a.bytes - b.bytes || b.pixels - a.pixels,
  first: () => 0,
};

function keptCopy(ids, rule) {
  const known = (id) => state.imageFacts.get(id);
  const ranked = ids.map((id) => {
    const image = known(id);
    return image
      ? { id, known: 1, pixels: image.width * image.height, bytes: image.bytes }
      : { id, known: 0, pixels: 0, bytes: 0 };
  });
  const order = KEEP_RULES[rule];
  ranked.sort(
    (a, b) =>
      (rule === 'first' ? 0 : b.known - a.known) || order(a, b) || (a.id < b.id ? -1 : 1),
  );
  return ranked[0].id;
}

/** Marks which copy of each group the chosen rule keeps. */
function showKept() {
  const rule = $('dup-keep-rule').value;
  for (const group of document.querySelectorAll('.group')) {
    const copies = [...group.querySelectorAll('.copy')];
    const kept = keptCopy(copies.map((copy) => copy.dataset.id), rule);
    for (const copy of copies) $('dup-keep', copy).hidden = copy.dataset.id !== kept;
  }
}

function markAllButKept() {
  showKept();
  for (const copy of document.querySelectorAll('.copy')) {
    $('dup-mark', copy).checked = $('dup-keep', copy).hidden;
  }
  updateMarked();
}

async function deleteMarked() {
  const ids = markedIds();
  const whole = [...document.querySelectorAll('.group')].filter((group) =>
    [...group.querySelectorAll('[data-testid="dup-mark"]')].every((box) => box.checked),
  ).length;
  const warning = whole ? ` Every copy of ${plural(whole, 'group')} is among them.` : '';
  if (!(await confirmDelete(ids, warning))) return;
  $('dup-count').textContent = `Deleting ${plural(ids.length, 'item')}…`;
  await api('POST', 'v1/delete', { ids }); // one durable commit; ids already gone are listed
  await Promise.all([findDuplicates(), loadStats()]);
}

// -- the collection's shape: groups and unusual items ---------------------------------------

const OUTLIERS_SHOWN = 24;

async function showClusters(event) {
  event?.preventDefault();
  const count = Number($('cluster-count').value);
  $('clusters-note').textContent = 'Grouping…';
  clearList($('clusters'));
  const answer = await api('GET', `v1/clusters?${new URLSearchParams({ count, per_cluster: 6 })}`);
  $('clusters').append(
    ...answer.clusters.map((cluster) => clusterCard(cluster, answer.sampled)),
  );
  $('clusters-note').textContent =
    `${plural(answer.clusters.length, 'group')} of ` +
    (answer.sampled < answer.total
      ? `a sample of ${answer.sampled.toLocaleString('en')} of ${plural(answer.total, 'item')}`
      : plural(answer.total, 'item')) +
    ', largest first; each shows the items nearest its centre.';
}

function clusterCard(cluster, sampled) {
  const card = fromTemplate('cluster-template');
  const share = Math.round((100 * cluster.size) / sampled);
  $('cluster-size', card).textContent = `${plural(cluster.size, 'item')} (${share}%)`;
  card.querySelector('.group-items').append(
    ...cluster.representatives.map((match) => memberCard(match, `centre ${match.score.toFixed(3)}`)),
  );
  const ids = cluster.representatives.map((match) => match.id);
  $('search-cluster', card).addEventListener(
    'click',
    guarded(() => searchLikeGroup(ids)),
  );
  return card;
}

function memberCard(match, note) {
  const card = fromTemplate('member-template');
  card.dataset.id = match.id;
  $('member-id', card).textContent = match.id;
  $('member-id', card).title = match.id;
  $('member-score', card).textContent = note;
  const thumb = $('open-item', card);
  thumb.setAttribute('aria-label', `Show ${match.id}`);
  thumb.addEventListener('click', guarded(() => openItem(match.id)));
  loadThumbnail(thumb, match.id);
  return card;
}

function searchLikeGroup(ids) {
  if (state.image) removeImage();
  hideQueryItem();
  $('text-query').value = '';
  showView('search');
  const positives = ids.map((id) => ({ id }));
  return searchAnew({ positives, exclude_self: true }, `more like a group of ${ids.length}`);
}

/** The items farthest from their nearest neighbour: the scan of every item's nearest other
 * (the duplicates scan at k=1, page by page), lowest first. */
async function findOutliers() {
  clearList($('outliers'));
  const bar = $('outlier-progress');
  bar.hidden = false;
  const nearest = [];
  let cursor = 0;
  let scanned = 0;
  do {
    const params = new URLSearchParams({ threshold: -1, k: 1, cursor });
    const page = await api('GET', `v1/duplicates?${params}`);
    scanned += page.scanned;
    bar.querySelector('progress').max = Math.max(page.total, 1);
    bar.querySelector('progress').value = scanned;
    bar.querySelector('span').textContent = `Scanned ${scanned} of ${plural(page.total, 'item')}`;
    for (const item of page.items) {
      nearest.push({ id: item.id, score: item.neighbours[0].score, image: item.image });
    }
    cursor = page.next_cursor;
  } while (cursor !== null);
  nearest.sort((a, b) => a.score - b.score || (a.id < b.id ? -1 : 1));
  const shown = nearest.slice(0, OUTLIERS_SHOWN);
  $('outliers').append(
    ...shown.map((item) => memberCard(item, `nearest other ${item.score.toFixed(3)}`)),
  );
  bar.querySelector('span').textContent +=
    `: the ${plural(shown.length, 'item')} least like any other, most unusual first`;
}

// -- views and events ----------------------------------------------------------------------

function showView(name) {
  for (const tab of document.querySelectorAll('.tab')) {
    tab.setAttribute('aria-pressed', String(tab.dataset.view === name));
  }
  for (const view of ['search', 'duplicates', 'overview', 'collection']) {
    document.getElementById(`${view}-view`).hidden = name !== view;
  }
}

function imageFile(transfer) {
  return [...(transfer?.files || [])].find((file) => !file.type || file.type.startsWith('image/'));
}

function listenForImages() {
  const hint = $('drop-hint');
  document.addEventListener('dragover', (event) => {
    if (!event.dataTransfer.types.includes('Files')) return;
    event.preventDefault();
    hint.hidden = false;
  });
  document.addEventListener('dragleave', (event) => {
    if (event.relatedTarget === null) hint.hidden = true;
  });
  document.addEventListener('drop', (event) => {
    if (!event.dataTransfer.types.includes('Files')) return; // text drops into the inputs
    event.preventDefault();
    hint.hidden = true;
    const file = imageFile(event.dataTransfer);
    if (file) guarded(useImage)(file);
  });
  document.addEventListener('paste', (event) => {
    const file = imageFile(event.clipboardData);
    if (!file) return; // text pastes into the inputs as usual
    event.preventDefault();
    guarded(useImage)(file);
  });
  $('image-input').addEventListener('change', (event) => {
    if (event.target.files[0]) guarded(useImage)(event.target.files[0]);
  });
}

function listenForBoxes() {
  const frame = $('query-frame');
  frame.addEventListener('pointerdown', startBox);
  frame.addEventListener('pointermove', moveBox);
  frame.addEventListener('pointerup', guarded(endBox));
  frame.addEventListener('pointercancel', () => {
    state.drag = null;
    setBox(state.box);
  });
  $('clear-box').addEventListener('click', guarded(clearBox));
  $('clear-image').addEventListener('click', endImageQuery);
}

function listen() {
  for (const tab of document.querySelectorAll('.tab')) {
    tab.addEventListener('click', () => showView(tab.dataset.view));
  }
  $('tab-collection').addEventListener('click', guarded(loadStats)); // fresh figures
  $('clusters-form').addEventListener('submit', guarded(showClusters));
  $('find-outliers').addEventListener('click', guarded(findOutliers));
  $('reconnect').addEventListener('click', guarded(loadStats));
  $('search-form').addEventListener('submit', guarded(submitSearch));
  $('k').addEventListener('change', guarded(rerun));
  $('refine').addEventListener('click', guarded(refine));
  $('copy-results').addEventListener('click', guarded(copyResults));
  $('download-json').addEventListener(
    'click',
    guarded(() => download(resultsJson(chosenMatches()), 'application/json', 'results.json')),
  );
  $('download-csv').addEventListener(
    'click',
    guarded(() => download(resultsCsv(chosenMatches()), 'text/csv', 'results.csv')),
  );
  $('tag-results').addEventListener('click', guarded(tagResults));
  $('delete-results').addEventListener('click', guarded(deleteResults));
  $('clear-selection').addEventListener('click', clearMarks);
  $('clear-query-item').addEventListener('click', hideQueryItem);
  $('duplicates-form').addEventListener('submit', guarded(findDuplicates));
  $('dup-keep-rule').addEventListener('change', showKept);
  $('dup-mark-rest').addEventListener('click', markAllButKept);
  $('dup-delete').addEventListener('click', guarded(deleteMarked));
  listenForImages();
  listenForBoxes();
}

listen();
guarded(loadStats)();
