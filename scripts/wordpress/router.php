<?php
/**
 * Router for PHP's built-in web server: `php -S 127.0.0.1:PORT -t SITE router.php`.
 *
 * Real files (static assets, wp-admin/*.php, wp-login.php, ...) are served as they are; every other path goes
 * to WordPress's front controller, which is what Apache's mod_rewrite rules do. That makes pretty permalinks and
 * /wp-json/... work, while /?rest_route=/... keeps working as it always does.
 */

$root = rtrim($_SERVER['DOCUMENT_ROOT'], '/');
$path = rawurldecode(parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH) ?? '/');

if (strpos($path, "\0") !== false || preg_match('#(^|/)\.\.(/|$)#', $path)) {
    http_response_code(400);
    exit;
}

$target = $root . $path;
if ($path !== '/' && is_file($target)) {
    return false;
}
if ($path !== '/' && is_dir($target)) {
    if (substr($path, -1) !== '/') {
        $query = parse_url($_SERVER['REQUEST_URI'], PHP_URL_QUERY);
        header('Location: ' . $path . '/' . ($query ? '?' . $query : ''), true, 301);
        exit;
    }
    if (is_file($target . 'index.php')) {
        return false;
    }
}

$_SERVER['SCRIPT_FILENAME'] = $root . '/index.php';
$_SERVER['SCRIPT_NAME'] = '/index.php';
$_SERVER['PHP_SELF'] = '/index.php';
unset($_SERVER['PATH_INFO'], $_SERVER['ORIG_PATH_INFO']);
chdir($root);
require $root . '/index.php';
